"""A linear bound on how deep markup nests, checked before the HTML5 parser runs (pure)."""

from __future__ import annotations

import re

# -- a linear bound on nesting, checked before the HTML5 parser runs -------------------------
# An HTML5 tree builder looks down the stack of open elements at most start and end tags, so
# 200,000 nested <div>s cost it minutes. A message nested more than MAX_DEPTH deep (Chromium
# stops nesting at 512) is refused unread. The estimate below models the stack with the
# tokenizer's rules and pops less than a browser would, so it errs towards "too deep".
MAX_DEPTH = 512
_WALK = 16  # how far down the modelled stack an end tag looks for its element
_TAG = re.compile(
    r"<!--(?:-?>|.*?(?:--!?>|\Z))"  # a comment; "<!-->" and "<!--->" end at once
    r"|<!\[CDATA\[(.*?)(?:\]\]>|\Z)"  # CDATA in SVG/MathML, a bogus comment elsewhere
    r"|<(/?)([A-Za-z][^\t\n\f\r />]*)"  # a tag and its attributes, as the tokenizer reads them
    r"((?>[\t\n\f\r /]+|[^\t\n\f\r />][^\t\n\f\r />=]*+"
    r"(?>[\t\n\f\r ]*=[\t\n\f\r ]*(?>\"[^\"]*\"?|'[^']*'?|[^\t\n\f\r >]*))?)*+)(>?)"
    r"|<[!?/][^>]*>?",  # a bogus comment (<!x>, <?x>, </1>)
    re.S,
)
_SCRIPT_STATE = re.compile(r"<!--(?:-*>)?|-->|<(/?)script(?=[\t\n\f\r />])", re.I)
_VOID = frozenset(
    "area base basefont bgsound br col embed frame hr image img input keygen link meta param"
    " source track wbr".split()
)
_RAW = frozenset("style textarea title xmp iframe noembed noframes".split())
_SPECIAL_TAGS = frozenset(
    "address applet area article aside base basefont bgsound blockquote body br button caption"
    " center col colgroup dd details dialog dir div dl dt embed fieldset figcaption figure footer"
    " form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input keygen li"
    " link listing main marquee menu meta nav noembed noframes noscript object ol p param"
    " plaintext pre script search section select source style summary table tbody td template"
    " textarea tfoot th thead title tr track ul wbr xmp mi mo mn ms mtext annotation-xml"
    " foreignobject desc".split()
)
_TABLE_PARTS = frozenset("caption colgroup tbody thead tfoot tr td th".split())
# A start tag that closes an open element of these names (table parts close across each other).
_CLOSES = {name: frozenset({name}) for name in "p option h1 h2 h3 h4 h5 h6".split()}
_CLOSES |= {"li": frozenset({"li"}), "dd": frozenset({"dd", "dt"}), "dt": frozenset({"dd", "dt"})}
_CLOSES |= {"td": frozenset({"td", "th"}), "th": frozenset({"td", "th"}), "tr": frozenset({"tr"})}
_CLOSES |= {t: frozenset({"tbody", "thead", "tfoot"}) for t in ("tbody", "thead", "tfoot")}
_BREAKOUT = frozenset(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img"
    " li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul"
    " var".split()
)
_INTEGRATION = frozenset("foreignobject desc title mi mo mn ms mtext annotation-xml".split())
_FONT_BREAKOUT = re.compile(r"(?:^|[\t\n\f\r /])(?:color|face|size)(?=[\t\n\f\r /=]|$)", re.I)


def _pop_to(stack: list[tuple[str, bool]], names: frozenset[str], through: frozenset[str]) -> None:
    """Pop up to the nearest element named in names if only `through` or non-special ones
    are above it, within _WALK; else leave the stack as it is (a browser would pop more)."""
    for i in range(len(stack) - 1, max(len(stack) - 1 - _WALK, -1), -1):
        name, foreign = stack[i]
        if name in names:
            del stack[i:]
            return
        if not foreign and name in _SPECIAL_TAGS and name not in through:
            return


def too_deep(html: str) -> bool:
    """Whether the HTML may nest elements more than MAX_DEPTH deep (linear time)."""
    if html.count("<") <= MAX_DEPTH:
        return False
    stack: list[tuple[str, bool]] = []  # (name, SVG/MathML)
    pos, n = 0, len(html)
    while pos < n:
        m = _TAG.search(html, pos)
        if m is None:
            return False
        pos = m.end()
        if m.group(1) is not None:  # CDATA: whatever it hides may be start tags
            if _too_deep_starts(m.group(1), len(stack)):
                return True
            continue
        closing, name, attrs, complete = m.group(2, 3, 4, 5)
        if name is None or not complete:
            continue  # a comment, a bogus comment, or a tag cut off by the end of the input
        name = name.lower()
        if closing and stack and stack[-1][0] == name:  # the common case: well nested
            stack.pop()
            continue
        foreign = bool(stack) and stack[-1][1] and stack[-1][0] not in _INTEGRATION
        if closing:
            through = _TABLE_PARTS if name in _TABLE_PARTS or name == "table" else frozenset()
            _pop_to(stack, frozenset({name}), through)
            continue
        if foreign and (name in _BREAKOUT or name == "font" and _FONT_BREAKOUT.search(attrs)):
            while stack and stack[-1][1]:
                stack.pop()
            foreign = False
        if foreign or name in ("svg", "math"):
            if not attrs.rstrip().endswith("/"):
                stack.append((name, True))
        elif name == "plaintext":
            return False  # the rest of the input is text
        elif name not in _VOID:
            if name in _CLOSES:
                _pop_to(stack, _CLOSES[name], _TABLE_PARTS if name in _TABLE_PARTS else frozenset())
            stack.append((name, False))
            if name == "script":
                pos = _script_end(html, pos)
            elif name in _RAW:
                end = re.compile(rf"</{name}(?=[\t\n\f\r />])", re.I).search(html, pos)
                pos = end.start() if end else n
        if len(stack) > MAX_DEPTH:
            return True
    return False


def _too_deep_starts(text: str, depth: int) -> bool:
    starts = sum(1 for m in _TAG.finditer(text) if m.group(3) and not m.group(2))
    return depth + starts > MAX_DEPTH


def _script_end(html: str, pos: int) -> int:
    """Where a <script>'s text ends (the tokenizer's escaped and double-escaped states)."""
    escaped = double = False
    for m in _SCRIPT_STATE.finditer(html, pos):
        token = m.group()
        if token.startswith("<!--"):
            escaped = escaped or not token.endswith(">")
        elif token == "-->":
            escaped = double = False
        elif m.group(1):  # </script
            if not double:
                return m.start()
            double = False
        elif escaped:  # <script inside <!--
            double = True
    return len(html)
