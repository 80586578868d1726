"""E-mail addresses, also as people write them to dodge filters or because their keyboard does:
"nguyenvana at gmail dot com", "abc(at)yahoo.com", "abc ＠ gmail . com", "abc@gmail" (no domain
ending), "a b c @ gmail . com", "lan123 a còng gmail chấm com"; and Telegram-style "@handles".

An "@" (or "(at)", "[at]") is enough; a bare "at" or "a còng" also needs a mail domain after it
("gmail", or a dot and an ending such as "com"), so "the officer at desk 3" stays.
"""

from __future__ import annotations

from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.lexicon import PROVIDERS, TLDS
from bot.flows.scrubbing.text import View

_LOCAL_JOINS = frozenset("._+-")
_LABEL_JOINS = frozenset("-_")
_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_DOT_WORDS = frozenset(("dot", "cham"))
_MAX_LABELS = 5
#: Words before a spaced "@" that introduce the address rather than belong to it.
_NOT_LOCAL = frozenset(
    "mail email e la toi em minh cua gui vao qua o tai is me my at to and or lien he".split()
)


def find_emails(view: View) -> list[Found]:
    found = []
    tokens = view.tokens
    for index, token in enumerate(tokens):
        anchor = _anchor(view, index)
        if anchor is None:
            continue
        end_of_anchor, strong = anchor
        local_start = _local_part(view, index)
        domain = _domain(view, end_of_anchor)
        mail_domain = domain is not None and (
            domain[1][0] in PROVIDERS or (domain[2] and domain[1][-1] in TLDS)
        )
        if token.text == "@" and (
            local_start is None or (_handle_like(view, index) and not mail_domain)
        ):
            # "@ngocanh_99", "qua telegram @ngocanh_99": a chat handle, not an address.
            handle = _handle(view, index)
            if handle is not None:
                found.append(Found(token.start, handle, "handle"))
            continue
        if local_start is None or domain is None or not (strong or mail_domain):
            continue
        found.append(Found(local_start, domain[0], "email"))
    return found


def _anchor(view: View, index: int) -> tuple[int, bool] | None:
    """Whether token ``index`` starts an "at": the token index just after it, and whether the
    anchor alone shows an address ("@", "(at)") or it needs a mail domain ("at", "a còng")."""
    tokens = view.tokens
    token = tokens[index]
    if token.text == "@":
        spaced = [0 < index and tokens[index - 1].kind == "space"]
        spaced.append(index + 1 < len(tokens) and tokens[index + 1].kind == "space")
        return index + 1, not all(spaced)
    if token.text in _BRACKETS:
        inner = view.next_word(index, limit=1)
        if inner is not None and tokens[inner].flat in ("at", "a"):
            close = _skip_spaces(view, inner + 1)
            if close < len(tokens) and tokens[close].text == _BRACKETS[token.text]:
                # "(at)" shows an address; "(a)" may be a list item, so it needs a mail domain.
                return close + 1, tokens[inner].flat == "at"
        return None
    if token.is_word and token.flat == "at":
        return index + 1, False
    if token.is_word and token.flat == "a":
        following = view.next_word(index, limit=1)
        if following is not None and tokens[following].flat in ("cong", "moc"):
            return following + 1, False
    return None


def _local_part(view: View, anchor: int) -> int | None:
    """Where the part before the anchor starts: "tran.thi.b", single letters "a b c", or, before
    a spaced anchor, a few short words ("ngoc anh 99 @ gmail . com")."""
    tokens = view.tokens
    position = anchor - 1
    if position >= 0 and tokens[position].kind == "space" and len(tokens[position].text) <= 2:
        position -= 1
    if position < 0 or not tokens[position].is_word:
        return None
    start = position
    while start - 2 >= 0 and tokens[start - 1].text in _LOCAL_JOINS and tokens[start - 2].is_word:
        start -= 2
    if start == position and len(tokens[start].text) == 1:
        while (
            start - 2 >= 0
            and tokens[start - 1].text == " "
            and tokens[start - 2].is_word
            and len(tokens[start - 2].text) == 1
        ):
            start -= 2
    elif position != anchor - 1:
        start = _spaced_words(view, start)
    return tokens[start].start


def _spaced_words(view: View, start: int) -> int:
    tokens = view.tokens
    taken = 0
    while (
        taken < 3
        and start - 2 >= 0
        and tokens[start - 1].text == " "
        and tokens[start - 2].is_word
        and tokens[start - 2].text.isascii()
        and len(tokens[start - 2].text) <= 8
        and tokens[start - 2].flat not in _NOT_LOCAL
    ):
        start -= 2
        taken += 1
    return start


def _domain(view: View, position: int) -> tuple[int, list[str], bool] | None:
    """The labels after the anchor ("gmail", "com", "vn"), joined by ".", "dot", "(dot)" or "chấm"
    with spaces allowed around; the end of the last label, the labels, and whether a dot joined any.
    """
    tokens = view.tokens
    position = _skip_spaces(view, position)
    label = _label(view, position)
    if label is None:
        return None
    end_index, text = label
    labels = [text]
    while len(labels) < _MAX_LABELS:
        after_dot = _dot(view, _skip_spaces(view, end_index + 1))
        if after_dot is None:
            break
        label = _label(view, _skip_spaces(view, after_dot))
        if label is None:
            break
        end_index, text = label
        labels.append(text)
    return tokens[end_index].end, labels, len(labels) > 1


def _label(view: View, position: int) -> tuple[int, str] | None:
    tokens = view.tokens
    if position >= len(tokens) or not tokens[position].is_word:
        return None
    end = position
    while (
        end + 2 < len(tokens) and tokens[end + 1].text in _LABEL_JOINS and tokens[end + 2].is_word
    ):
        end += 2
    text = "".join(t.flat for t in tokens[position : end + 1])
    return end, text


def _dot(view: View, position: int) -> int | None:
    """The token index after a dot written as ".", "dot", "chấm", "(dot)" or "[dot]"."""
    tokens = view.tokens
    if position >= len(tokens):
        return None
    token = tokens[position]
    if token.text == ".":
        return position + 1
    if token.is_word and token.flat in _DOT_WORDS:
        return position + 1
    if token.text in _BRACKETS:
        inner = view.next_word(position, limit=1)
        if inner is not None and tokens[inner].flat == "dot":
            close = _skip_spaces(view, inner + 1)
            if close < len(tokens) and tokens[close].text == _BRACKETS[token.text]:
                return close + 1
    return None


def _skip_spaces(view: View, position: int) -> int:
    tokens = view.tokens
    if (
        position < len(tokens)
        and tokens[position].kind == "space"
        and len(tokens[position].text) <= 2
    ):
        return position + 1
    return position


def _handle_like(view: View, at: int) -> bool:
    """A space before the "@" and none after it, as a handle is written."""
    tokens = view.tokens
    return 0 < at < len(tokens) - 1 and tokens[at - 1].kind == "space" and tokens[at + 1].is_word


def _handle(view: View, at: int) -> int | None:
    """The end of a chat handle of four characters or more after a lone "@" ("@ngocanh_99")."""
    tokens = view.tokens
    if at + 1 >= len(tokens) or not tokens[at + 1].is_word:
        return None
    end = at + 1
    while end + 2 < len(tokens) and tokens[end + 1].text in ("_", ".") and tokens[end + 2].is_word:
        end += 2
    text = view.norm[tokens[at + 1].start : tokens[end].end]
    if len(text) < 4 or not text.isascii():
        return None
    return tokens[end].end
