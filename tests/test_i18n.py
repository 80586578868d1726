"""The one catalog: compiled, complete, with plural forms, and numbers written the reader's way."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from bot import i18n
from bot.app import make_templates
from bot.dashboard import auth
from bot.dashboard.i18n import number, percent
from bot.runtime import Runtime
from storage.limits import Decision
from storage.models import Agency
from tests.adminseed import Batch, release, seed
from tests.test_dashboard import login

ROOT = Path(__file__).resolve().parent.parent
VI = i18n.LOCALE_DIR / "vi" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"


def _po() -> Catalog:
    with VI.open("rb") as handle:
        return read_po(handle, locale="vi")


def _key(message_id: str | tuple[str, ...] | list[str]) -> str:
    return message_id if isinstance(message_id, str) else message_id[0]


def _translations(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """What a catalog says: each message's translated forms, fuzzy ones left out (never compiled)."""
    said = {}
    for m in catalog:
        if not m.id or m.fuzzy:
            continue
        said[_key(m.id)] = tuple(str(f) for f in _forms(m.string))
    return said


def _extracted() -> dict[str, str | tuple[str, ...]]:
    """Every message the code and templates use, found by babel.cfg (as ``pybabel extract``)."""
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found: dict[str, str | tuple[str, ...]] = {}
    for _path, _line, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map
    ):
        found[_key(message)] = message
    return found


def test_the_compiled_catalog_is_the_po() -> None:
    """A .po edited without `pybabel compile` would ship the old texts: the .mo must match."""
    with VI.with_suffix(".mo").open("rb") as handle:
        compiled = read_mo(handle)
    assert _translations(compiled) == _translations(_po())
    assert compiled.plural_forms == _po().plural_forms == "nplurals=1; plural=0;"


def test_every_message_in_code_and_templates_has_a_vietnamese_translation() -> None:
    catalog = _po()
    found = _extracted()
    assert len(found) > 90  # the extraction saw the bot, the dashboard and the templates
    missing = []
    for key, message in found.items():
        entry = catalog.get(message if isinstance(message, str) else message[0])
        forms = _forms(entry.string) if entry is not None else ()
        if entry is None or entry.fuzzy or not forms or not all(forms):
            missing.append(key)
        elif isinstance(message, tuple) != isinstance(entry.id, tuple):
            missing.append(f"{key} (plural form mismatch)")
    assert not missing, missing
    assert {
        "Erased: {n} response.",
        "Satisfaction rate",
        "Hash chain intact: %(num)s entry.",
    } <= set(found)


def _forms(string: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if string is None:
        return ()
    return (string,) if isinstance(string, str) else tuple(string)


def test_translations_keep_the_placeholders_of_their_message() -> None:
    """A translation that drops or renames ``{n}`` or ``%(seq)s`` would fail at run time."""
    pattern = re.compile(r"\{\w+\}|%\(\w+\)s|%%")
    for m in _po():
        if not m.id:
            continue
        ids = _forms(m.id)
        wanted = set(pattern.findall(ids[-1]))
        for form in _forms(m.string):
            assert set(pattern.findall(form)) == wanted, m.id


def test_plural_forms_in_english_and_vietnamese() -> None:
    one, many = "Erased: {n} response.", "Erased: {n} responses."
    assert i18n.ngettext("en", one, many, 1) == "Erased: 1 response."
    assert i18n.ngettext("en", one, many, 2) == "Erased: 2 responses."
    assert i18n.ngettext("en", one, many, 0) == "Erased: 0 responses."
    # Vietnamese has one form; the count is written with its grouping dot.
    assert i18n.ngettext("vi", one, many, 1) == "Đã xoá 1 phiếu trả lời."
    assert i18n.ngettext("vi", one, many, 1200) == "Đã xoá 1.200 phiếu trả lời."
    assert i18n.ngettext("en", one, many, 1200) == "Erased: 1,200 responses."


def test_the_login_lock_out_counts_its_minutes() -> None:
    def locked(seconds: float) -> auth.Throttled:
        return auth.Throttled("account", Decision(allowed=False, remaining=0, retry_after=seconds))

    assert locked(30).message("en") == "Too many login attempts. Try again in 1 minute."
    assert locked(600).message("en") == "Too many login attempts. Try again in 10 minutes."
    assert locked(600).message("vi") == "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau 10 phút."


def test_numbers_percentages_and_dates_follow_the_locale() -> None:
    assert number(1234.5, "vi") == "1.234,5" and number(1234.5, "en") == "1,234.5"
    assert number(1234567, "vi", 0) == "1.234.567" and number(1234567, "en") == "1,234,567"
    assert number(None, "vi") == "–"
    assert percent(87.5, "vi") == "87,5%" and percent(87.5, "en") == "87.5%"
    assert percent(100, "vi") == "100,0%" and percent(None, "en") == "–"
    # Rounded where Python's own formatting rounds (exact binary value, ties to even).
    for value in (0.05, 0.15, 2.675, 86.25, 86.35, 99.95, 12.345678):
        assert number(value, "en", 2) == f"{value:,.2f}"
        assert number(value, "en") == f"{value:,.1f}"
    day = dt.date(2026, 12, 2)
    assert i18n.format_date(day, "vi") == "2 thg 12, 2026"
    assert i18n.format_date(day, "en") == "Dec 2, 2026"
    moment = dt.datetime(2026, 12, 2, 8, 5, tzinfo=dt.UTC)
    assert i18n.format_datetime(moment.replace(tzinfo=None), "vi") == "08:05:00 2 thg 12, 2026"


def test_templates_translate_and_count_in_the_language_of_the_render() -> None:
    env = make_templates()
    template = env.from_string(
        '{{ _("Satisfaction rate") }} | {{ ngettext("Hash chain intact: %(num)s entry.", '
        '"Hash chain intact: %(num)s entries.", n, num=num(n, 0)) }} | {{ pct(rate) }}'
    )
    assert template.render(lang="vi", n=1500, rate=80.0) == (
        "Tỷ lệ hài lòng | Chuỗi băm nguyên vẹn: 1.500 mục. | 80,0%"
    )
    assert template.render(lang="en", n=1, rate=80.0) == (
        "Satisfaction rate | Hash chain intact: 1 entry. | 80.0%"
    )
    assert template.render(lang="en", n=3, rate=None).endswith("3 entries. | –")
    with_markup = env.from_string(
        '{{ _("Entry %(seq)s onwards were anchored but are missing '
        'from the database: the log was cut!", seq=s) }}'
    )
    assert "&lt;b&gt;" in with_markup.render(lang="en", s="<b>")  # values stay escaped


def test_the_bot_says_its_texts_from_the_compiled_catalog() -> None:
    assert i18n.gettext("vi", "Skip") == "Bỏ qua" and i18n.gettext("en", "Skip") == "Skip"
    assert i18n.gettext("vi", "Answer: {answer}", answer="Có") == "Đã chọn: Có"
    assert isinstance(i18n.translations("vi"), i18n.Translations)  # the .mo was found
    assert i18n.gettext("fr", "Skip") == "Skip"  # no catalog: the English message id


async def test_dashboard_numbers_and_plurals_in_both_languages(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await seed(runtime, "ubnd-test", [Batch(12, "CB01"), Batch(3, "CB02", satisfaction=1)])
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    assert (await login(client, "lan", "mat-khau-dai")).status == 303

    def rate(html: str) -> str:
        found = re.search(r'data-testid="total-rate">([^<]*)<', html)
        assert found, html
        return found.group(1)

    vi = await (await client.get("/admin/")).text()
    assert rate(vi) == "80,0%"  # 12 of 15 satisfied, with the Vietnamese decimal comma
    assert "Tỷ lệ hài lòng" in vi and 'lang="vi"' in vi
    switched = await client.get("/admin/lang/en?next=/admin/audit", allow_redirects=False)
    assert switched.status == 303 and switched.headers["Location"] == "/admin/audit"
    audit = await (await client.get("/admin/audit")).text()
    entries = int(re.search(r"Hash chain intact: (\d+) entr", audit).group(1))  # type: ignore[union-attr]
    assert f"Hash chain intact: {entries} {'entry' if entries == 1 else 'entries'}." in audit
    en = await (await client.get("/admin/")).text()
    assert rate(en) == "80.0%" and "Satisfaction rate" in en and 'lang="en"' in en
    assert re.search(r"Groups under \d+ responses are hidden", en)
    back = await client.get("/admin/?lang=vi")
    assert "Nhóm dưới" in await back.text()
    # A storage error (technical English) is framed in the reader's language.
    exports = await (await client.get("/admin/exports?lang=vi")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', exports)
    assert csrf
    refused = await client.post(
        "/admin/exports/download?lang=vi",
        data={"csrf": csrf.group(1), "level": "agency", "format": "csv", "release": "2099-01"},
    )
    assert refused.status == 400
    assert "Không tạo được tệp xuất (no release &#39;2099-01&#39;" in await refused.text()


async def test_rating_and_simulator_pages_speak_the_catalog(
    client: TestClient[Any, Any], api_key: str
) -> None:
    registered = await client.post(
        "/api/v1/dossiers",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"dossier_code": "HS-I18N"},
    )
    token = (await registered.json())["rating_token"]
    # Whatever the phone says, the receipt's page is Vietnamese with an English line...
    vi = await (await client.get(f"/r/{token}", headers={"Accept-Language": "en-US"})).text()
    assert "<h1>Đánh giá việc giải quyết hồ sơ</h1>" in vi and 'lang="vi"' in vi
    assert "Trò chuyện trên web (mô phỏng)" in vi and "Choose an app to receive" in vi
    assert f'href="/simulator?token={token}"' in vi
    # ...and English when its link asks, the chat following in English.
    en = await (await client.get(f"/r/{token}?lang=en")).text()
    assert "<h1>Rate how your dossier was handled</h1>" in en and 'lang="en"' in en
    assert "Đánh giá" not in en and f'href="/simulator?token={token}&amp;lang=en"' in en
    simulator_vi = await (await client.get("/simulator")).text()
    assert "Thử phiếu" in simulator_vi and "<title>Mô phỏng trò chuyện</title>" in simulator_vi
    simulator_en = await (await client.get("/simulator?lang=en")).text()
    assert "Try the survey" in simulator_en and 'value="en" selected' in simulator_en


async def test_the_error_page_says_both_languages_from_the_catalog(
    client: TestClient[Any, Any],
) -> None:
    page = await client.get("/admin/nowhere")
    text = await page.text()
    assert (
        page.status == 404 and "Yêu cầu không thực hiện được. Vui lòng quay lại và thử lại." in text
    )
    assert (
        '<p lang="en">The request could not be completed. Please go back and try again.</p>' in text
    )
