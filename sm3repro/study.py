"""The study's training protocol, defined once (Section III of the study).

The config schema, the optimizer registry, SM3's and the parser's defaults and the report read
these values from here; ``python -m sm3repro.train --cfg job`` shows them in a composed config.
"""

LR = 0.01  # one learning rate for every optimizer and batch size
EMBED_DIM = 50  # Chen & Manning (2014)'s parser, which the study keeps
HIDDEN = (200, 200)
BATCH_SIZES = (64, 512)  # Table I's; claims are judged at both
EPOCHS = 10
