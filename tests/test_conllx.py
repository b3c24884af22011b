"""The study's PTB route: CoNLL-X files given by path, with optional pretrained vectors."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from sm3repro.train import CONF_DIR, run

# Hand-written, CS224n-style CoNLL-X: ID FORM _ UPOS XPOS _ HEAD DEPREL _ _
SENTENCES = [
    [("The", "DET", "DT", 2, "det"), ("cat", "NOUN", "NN", 3, "nsubj"), ("sleeps", "VERB", "VBZ", 0, "root"),
     (".", "PUNCT", ".", 3, "punct")],
    [("Dogs", "NOUN", "NNS", 2, "nsubj"), ("bark", "VERB", "VBP", 0, "root"), ("loudly", "ADV", "RB", 2, "advmod")],
    [("She", "PRON", "PRP", 2, "nsubj"), ("saw", "VERB", "VBD", 0, "root"), ("the", "DET", "DT", 4, "det"),
     ("cat", "NOUN", "NN", 2, "obj"), (".", "PUNCT", ".", 2, "punct")],
]  # fmt: skip


def write_conllx(path: Path, copies: int) -> None:
    lines = []
    for _ in range(copies):
        for sent in SENTENCES:
            for i, (form, upos, xpos, head, rel) in enumerate(sent, start=1):
                lines.append(f"{i}\t{form}\t_\t{upos}\t{xpos}\t_\t{head}\t{rel}\t_\t_")
            lines.append("")
    path.write_text("\n".join(lines) + "\n")


def test_conllx_files_and_pretrained_vectors_train_end_to_end(tmp_path: Path) -> None:
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    write_conllx(ptb / "train.conll", copies=20)
    write_conllx(ptb / "dev.conll", copies=1)
    write_conllx(ptb / "test.conll", copies=1)
    (ptb / "en-cw.txt").write_text(
        "".join(f"{w} " + " ".join(["0.5"] * 50) + "\n" for w in ("cat", "dogs", "the"))
    )
    overrides = [
        "data=conllx", f"data.dir={ptb}", f"data.embeddings={ptb / 'en-cw.txt'}", "data.min_word_freq=1",
        "optimizer=adam", "optimizer.lr=0.005", "epochs=6", "batch_size=16", "torch_threads=1",
        "logger=none", f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}",
        "model.dropout=0.0",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["data"]["name"] == "conllx" and summary["data"]["train_sentences"] == 60
    assert summary["data"]["pretrained_words"] == 3
    assert summary["data"]["vocab_tags"] == 3 + 9  # NULL, ROOT, UNK + 9 XPOS tags (UPOS has 6)
    # Three sentences seen 20 times each: the parser learns them.
    assert summary["final"]["test"]["uas_micro"] >= 0.9, summary["final"]["test"]
