"""Links to a citizen's own profile: "facebook.com/nguyen.van.an.123", "zalo.me/0912345678",
"t.me/ngocanh_99". A profile link names its owner as surely as a phone number does. Links to any
other site ("dichvucong.gov.vn/p/home") are kept: they name a page, not a person.
"""

from __future__ import annotations

import re

from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.text import View

_PROFILE = re.compile(
    r"(?<![\w.])(?:https?://)?(?:www\.|m\.|web\.)?"
    r"(?:facebook\.com|fb\.com|fb\.me|m\.me|zalo\.me|chat\.zalo\.me|t\.me|telegram\.me"
    r"|instagram\.com|tiktok\.com|linkedin\.com/in|x\.com|twitter\.com)"
    r"/[^\s\"'<>()\[\]]{1,200}",
    re.IGNORECASE,
)


def find_links(view: View) -> list[Found]:
    return [Found(m.start(), m.end(), "link") for m in _PROFILE.finditer(view.norm)]
