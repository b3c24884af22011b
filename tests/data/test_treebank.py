"""The treebank reader: every malformation named with file and line; tolerated variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from sm3repro.data.treebank import Sentence, TreebankError, read_treebank


def row(i: int | str, form: str, head: int | str, rel: str = "dep", n_cols: int = 10) -> str:
    """One token line with ``n_cols`` tab-separated columns (10 is well-formed)."""
    cols = [str(i), form, form.lower(), "X", "XX", "_", str(head), rel, "_", "_"]
    cols += ["_"] * (n_cols - len(cols))
    return "\t".join(cols[:n_cols])


GOOD = [row(1, "Hello", 2), row(2, "world", 0, "root")]  # lines 1-2, then a blank line 3


def lines(*sentences: list[str]) -> str:
    return "".join("\n".join(s) + "\n\n" for s in sentences)


# (case, file contents, line of the error, phrase in the problem). A valid sentence comes
# first where it helps show that the line counts through earlier sentences.
MALFORMED = [
    ("truncated line", lines(GOOD, [row(1, "a", 0, n_cols=4)]), 4, "found 4"),
    ("9 columns", lines(GOOD, [row(1, "a", 0, "root"), row(2, "b", 1, n_cols=9)]), 5, "found 9"),
    ("11 columns", lines([row(1, "a", 0, "root", n_cols=11)]), 1, "found 11"),
    ("non-integer HEAD", lines(GOOD, [row(1, "a", 0), row(2, "b", "x")]), 5, "not an integer"),
    ("underscore HEAD", lines([row(1, "a", "_")]), 1, "not an integer"),
    ("HEAD out of range", lines(GOOD, [row(1, "a", 0), row(2, "b", 3)]), 5, "out of range"),
    ("negative HEAD", lines([row(1, "a", 0), row(2, "b", -1)]), 2, "out of range"),
    ("self-loop", lines([row(1, "a", 0), row(2, "b", 2)]), 2, "self-loop"),
    # Tree problems are reported at the sentence's first token line (after its comment).
    (
        "cycle",
        lines(GOOD, ["# sent_id = 2", row(1, "a", 0), row(2, "b", 3), row(3, "c", 2)]),
        5,
        "cycle",
    ),
    ("no root", lines(GOOD, [row(1, "a", 2), row(2, "b", 1)]), 4, "no root"),
    ("two roots", lines([row(1, "a", 0), row(2, "b", 0)]), 1, "expected one root"),
    ("duplicate ID", lines([row(1, "a", 0), row(2, "b", 1), row(2, "c", 1)]), 3, "duplicate"),
    ("skipped ID", lines([row(1, "a", 0), row(3, "b", 1)]), 2, "skipped"),
    ("bad ID", lines([row("one", "a", 0)]), 1, "not a valid token ID"),
    ("comment inside a sentence", lines([row(1, "a", 0), "# note", row(2, "b", 1)]), 2, "comment"),
]


def assert_error(path: Path, line: int | None, phrase: str) -> None:
    with pytest.raises(TreebankError) as info:
        read_treebank(path)
    err = info.value
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(err).startswith(f"{where}: "), str(err)
    assert (err.path, err.line) == (str(path), line)
    assert phrase in err.problem, err.problem


@pytest.mark.parametrize(
    ("text", "line", "phrase"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_file(tmp_path: Path, text: str, line: int, phrase: str) -> None:
    path = tmp_path / "bad.conllu"
    path.write_text(text, encoding="utf-8")
    assert_error(path, line, phrase)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.conllu"
    path.write_text("")
    assert_error(path, None, "empty")
    path.write_text("\n\n  \n")  # blank lines only: still nothing in it
    assert_error(path, None, "empty")


def test_comment_only_file(tmp_path: Path) -> None:
    path = tmp_path / "comments.conllu"
    path.write_text("# newdoc\n# text = nothing\n\n")
    assert_error(path, None, "only comments")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "with BOM"])
def test_invalid_utf8_names_the_line(tmp_path: Path, bom: bytes) -> None:
    path = tmp_path / "latin1.conllu"
    good = lines(GOOD).encode()  # lines 1-3
    path.write_bytes(bom + good + row(1, "\xe9t\xe9", 0, "root").encode("latin-1") + b"\n")
    assert_error(path, 4, "invalid UTF-8 (byte 0xe9)")


def test_directory_and_missing_path(tmp_path: Path) -> None:
    assert_error(tmp_path, None, "is a directory")
    assert_error(tmp_path / "nope.conllu", None, "no such file")


def check_good(sentences: list[Sentence]) -> None:
    assert len(sentences) == 2
    assert sentences[0].forms == ["Hello", "world"] and sentences[0].heads == [2, 0]
    assert sentences[1].forms == ["a", "b", "c"] and sentences[1].heads == [0, 1, 1]
    assert sentences[1].deprels == ["root", "dep", "dep"]


SECOND = ["# sent_id = 2", row(1, "a", 0, "root"), row(2, "b", 1), row(3, "c", 1)]


def test_crlf_bom_and_missing_final_blank_line(tmp_path: Path) -> None:
    text = lines(GOOD, SECOND).rstrip("\n")  # no final newline nor blank line
    path = tmp_path / "windows.conllu"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    sentences = read_treebank(path)
    check_good(sentences)
    assert sentences[1].comments == ["# sent_id = 2"]
    assert sentences[1].line == 5  # the first token's line, after the comment


def test_trailing_spaces_in_comments(tmp_path: Path) -> None:
    path = tmp_path / "spaces.conllu"
    path.write_text(lines(["# text = Hello world   ", *GOOD], SECOND))
    sentences = read_treebank(path)
    check_good(sentences)
    assert sentences[0].comments == ["# text = Hello world"]


def test_multiword_tokens_and_empty_nodes_are_skipped(tmp_path: Path) -> None:
    # "don't go": MWT line 1-2, and an empty node 3.1 after the last word.
    sentence = [
        "# text = don't go",
        "1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
        row(1, "do", 3, "aux"),
        row(2, "n't", 3, "advmod"),
        row(3, "go", 0, "root"),
        "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\t_",
    ]
    path = tmp_path / "mwt.conllu"
    path.write_text(lines(sentence))
    [sent] = read_treebank(path)
    assert sent.forms == ["do", "n't", "go"]
    assert sent.heads == [3, 3, 0]
    assert sent.line == 3


def test_is_projective() -> None:
    def tree(heads: list[int]) -> Sentence:
        n = len(heads)
        return Sentence(["w"] * n, ["w"] * n, ["X"] * n, ["X"] * n, heads, ["dep"] * n)

    assert tree([2, 0, 2]).is_projective()
    assert not tree([3, 4, 0, 3]).is_projective()  # 1<-3 crosses 2<-4
    assert not tree([3, 0, 2]).is_projective()  # 1<-3 crosses the root arc to 2


def test_ewt_train_counts(ewt_train: Path) -> None:
    sentences = read_treebank(ewt_train)
    assert len(sentences) == 12_544
    assert sum(len(s) for s in sentences) == 204_577
    assert sum(not s.is_projective() for s in sentences) == 288


def test_feats_are_read_and_make_the_all_tag_view(ewt_train: Path) -> None:
    from sm3repro.data.vocab import TreebankView, Vocab

    sentences = read_treebank(ewt_train)[:300]
    assert all(len(s.feats) == len(s) for s in sentences)
    assert any(f.startswith("Mood=") or "VerbForm=" in f for s in sentences for f in s.feats)
    both = Vocab.build(sentences, TreebankView(pos_column="both"))
    full = Vocab.build(sentences, TreebankView(pos_column="all"))
    first = sentences[0]
    expected = [f"{u}|{x}|{f}" for u, x, f in zip(first.upos, first.xpos, first.feats, strict=True)]
    assert TreebankView(pos_column="all").tags(first) == expected
    assert len(full.tags) > len(both.tags)  # FEATS split the UPOS|XPOS classes further
    with pytest.raises(ValueError, match="FEATS"):
        TreebankView(pos_column="all").tags(Sentence(["a"], ["a"], ["X"], ["XX"], [0], ["root"]))


def test_written_predictions_keep_feats(tmp_path: Path) -> None:
    from sm3repro.data.treebank import write_conllu

    src = tmp_path / "in.conllu"
    src.write_text(lines([row(1, "Hello", 2).replace("\t_\t2", "\tNumber=Sing\t2"),
                          row(2, "world", 0, "root")]))  # fmt: skip
    out = tmp_path / "out.conllu"
    write_conllu(out, read_treebank(src))
    assert read_treebank(out)[0].feats == ["Number=Sing", "_"]
