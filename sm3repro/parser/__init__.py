"""The Chen & Manning (2014) arc-standard parser: transitions, features, model, decoding."""
