"""Reading and validating dependency treebanks (CoNLL-U and CoNLL-X).

Both formats have ten tab-separated columns in the same positions; CoNLL-X's CPOSTAG/POSTAG
sit where CoNLL-U has UPOS/XPOS. Multiword-token lines (``3-4``) and empty nodes (``8.1``)
are skipped. Every problem is reported as ``file:line: what is wrong``.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import conllu
from conllu.parser import ParseException, parse_id_value, parse_int_value

from sm3repro.io import atomic_write_text

N_COLUMNS = 10
ID, FORM, LEMMA, UPOS, XPOS, FEATS, HEAD, DEPREL, DEPS, MISC = range(N_COLUMNS)


class TreebankError(ValueError):
    """A malformed treebank file; the message names the file and line."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class Sentence:
    """One sentence's syntactic words (no multiword tokens or empty nodes), 1-based in HEAD."""

    forms: list[str]
    lemmas: list[str]
    upos: list[str]
    xpos: list[str]
    heads: list[int]
    deprels: list[str]
    comments: list[str] = field(default_factory=list)
    line: int = 0  # line of the sentence's first token, for messages
    feats: list[str] = field(default_factory=list)  # FEATS column ("_" when empty)

    def __len__(self) -> int:
        return len(self.forms)

    def is_projective(self) -> bool:
        """True when no two arcs cross (with the root arc included)."""
        arcs = [(min(d, h), max(d, h)) for d, h in enumerate(self.heads, start=1)]
        for i, (a, b) in enumerate(arcs):
            for c, d in arcs[i + 1 :]:
                if a < c < b < d or c < a < d < b:
                    return False
        return True


def _tree_problem(heads: Sequence[int]) -> str | None:
    """Why ``heads`` (1-based, 0 = root) is not a tree, or None when it is one."""
    n = len(heads)
    roots = [i for i, h in enumerate(heads, start=1) if h == 0]
    if not roots:
        return "no token has HEAD 0 (the sentence has no root)"
    if len(roots) > 1:
        return (
            f"several tokens have HEAD 0 (tokens {', '.join(map(str, roots))}): expected one root"
        )
    state = [0] * (n + 1)  # 0 unvisited, 1 on current path, 2 reaches the root
    state[0] = 2
    for start in range(1, n + 1):
        path, node = [], start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = heads[node - 1]
        if state[node] == 1:
            cycle = path[path.index(node) :]
            return "HEAD values form a cycle through tokens " + " -> ".join(
                map(str, cycle + [node])
            )
        for p in path:
            state[p] = 2
    return None


def _read_text(path: Path) -> str:
    if not path.exists():
        raise TreebankError(path, None, "no such file")
    if path.is_dir():
        raise TreebankError(path, None, "is a directory, expected a treebank file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as err:
        # utf-8-sig reports positions after the stripped byte-order mark; undo that offset.
        pos = err.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data.count(b"\n", 0, pos) + 1
        raise TreebankError(path, line, f"invalid UTF-8 (byte 0x{data[pos]:02x})") from None


def read_treebank(path: str | os.PathLike) -> list[Sentence]:
    """Read and validate every sentence of a CoNLL-U or CoNLL-X file."""
    path = Path(path)
    sentences: list[Sentence] = []
    rows: list[tuple[int, list[str]]] = []  # (line number, columns) of the open sentence
    comments: list[str] = []
    saw_content = False
    line_no = 0
    for line_no, raw in enumerate(_read_text(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if rows:
                sentences.append(_sentence(path, rows, comments))
            rows, comments = [], []
            continue
        saw_content = True
        if line.startswith("#"):
            if rows:
                raise TreebankError(path, line_no, "comment line inside a sentence")
            comments.append(line.rstrip())
            continue
        cols = _token_columns(path, line_no, line, expected=len(rows) + 1)
        if cols is not None:
            rows.append((line_no, cols))
    if rows:  # a missing final blank line is tolerated
        sentences.append(_sentence(path, rows, comments))
    if not saw_content:
        raise TreebankError(path, None, "the file is empty")
    if not sentences:
        raise TreebankError(path, None, "the file has no sentences (only comments)")
    return sentences


def _token_columns(path: Path, line_no: int, line: str, expected: int) -> list[str] | None:
    """A token line's columns; None for a multiword token (3-4) or an empty node (8.1)."""
    cols = line.split("\t")
    if len(cols) != N_COLUMNS:
        raise TreebankError(
            path, line_no, f"expected {N_COLUMNS} tab-separated columns, found {len(cols)}"
        )
    try:
        token_id = parse_id_value(cols[ID])
    except ParseException:
        token_id = None
    if token_id is None:
        raise TreebankError(path, line_no, f"ID {cols[ID]!r} is not a valid token ID")
    if isinstance(token_id, tuple):
        return None
    if token_id != expected:
        kind = "duplicate" if token_id < expected else "skipped"
        raise TreebankError(
            path, line_no, f"token ID {token_id} out of sequence ({kind}): expected {expected}"
        )
    return cols


def _sentence(path: Path, rows: list[tuple[int, list[str]]], comments: list[str]) -> Sentence:
    """One sentence from its token rows, with its heads checked to form a tree."""
    heads = [_head(path, lineno, cols, len(rows)) for lineno, cols in rows]
    first_line = rows[0][0]
    problem = _tree_problem(heads)
    if problem:
        raise TreebankError(path, first_line, problem)
    column = [cols for _, cols in rows]
    return Sentence(
        forms=[c[FORM] for c in column],
        lemmas=[c[LEMMA] for c in column],
        upos=[c[UPOS] for c in column],
        xpos=[c[XPOS] for c in column],
        heads=heads,
        deprels=[c[DEPREL] for c in column],
        comments=comments,
        line=first_line,
        feats=[c[FEATS] for c in column],
    )


def _head(path: Path, lineno: int, cols: list[str], n_words: int) -> int:
    try:
        head = parse_int_value(cols[HEAD])
    except ParseException:
        head = None
    if head is None:
        raise TreebankError(path, lineno, f"HEAD {cols[HEAD]!r} is not an integer")
    if not 0 <= head <= n_words:
        raise TreebankError(
            path, lineno, f"HEAD {head} is out of range: the sentence has {n_words} words"
        )
    if head == int(cols[ID]):
        raise TreebankError(path, lineno, f"token {head} has itself as HEAD (self-loop)")
    return head


def write_conllu(
    path: str | os.PathLike,
    sentences: Sequence[Sentence],
    heads: Iterable[Sequence[int]] | None = None,
    deprels: Iterable[Sequence[str]] | None = None,
) -> None:
    """Write sentences as CoNLL-U, optionally with predicted heads and relations."""
    heads = heads if heads is not None else (s.heads for s in sentences)
    deprels = deprels if deprels is not None else (s.deprels for s in sentences)
    chunks = []
    for sent, sent_heads, sent_rels in zip(sentences, heads, deprels, strict=True):
        tokens = conllu.TokenList(
            [
                {
                    "id": i,
                    "form": sent.forms[i - 1],
                    "lemma": sent.lemmas[i - 1],
                    "upos": sent.upos[i - 1],
                    "xpos": sent.xpos[i - 1],
                    "feats": sent.feats[i - 1] if sent.feats else None,
                    "head": int(sent_heads[i - 1]),
                    "deprel": sent_rels[i - 1],
                    "deps": None,
                    "misc": None,
                }
                for i in range(1, len(sent) + 1)
            ]
        )
        body = tokens.serialize()
        chunks.append("".join(c + "\n" for c in sent.comments) + body)
    atomic_write_text(path, "".join(chunks))
