"""Word lists the detectors share, and the one rule for comparing a typed word with them.

The rule: a word typed with diacritics is compared with the exact spelling ("phản" is not "Phan",
"chợ" is not "cho"), a word typed without any with the folded spelling ("phan" may be "Phan"),
because the diacritics are what tell a family name or a keyword from a common word.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.flows.scrubbing.text import Token, fold_char


def fold(word: str) -> str:
    """Lower case without diacritics, as ``Token.flat``."""
    return "".join(fold_char(ch) for ch in word)


class Words:
    """A set of single words, matched by the rule above. ``lenient`` is for a comment typed
    without any diacritics: only then may "lo" stand for "Lò" (in a comment typed with diacritics,
    "lo" is the word "lo")."""

    def __init__(self, words: str) -> None:
        self.exact = frozenset(w.lower() for w in words.split())
        self.folded = frozenset(fold(w) for w in self.exact)

    def has(self, token: Token, lenient: bool) -> bool:
        if lenient and not token.has_diacritics:
            return token.flat in self.folded
        return token.text.lower() in self.exact


class Phrases:
    """A set of word sequences ("số_tài_khoản"), matched word by word by the rule above."""

    def __init__(self, phrases: str) -> None:
        self._by_folded: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for phrase in phrases.split():
            entry = tuple(w.lower() for w in phrase.split("_"))
            self._by_folded.setdefault(tuple(fold(w) for w in entry), []).append(entry)
        self.longest = max(len(e) for e in self._by_folded)
        self._first_words = frozenset(e[0] for e in self._by_folded)

    def matches(self, tokens: Sequence[Token], lenient: bool) -> bool:
        entries = self._by_folded.get(tuple(t.flat for t in tokens), [])
        return any(
            all(
                (lenient and not t.has_diacritics) or t.text.lower() == word
                for t, word in zip(tokens, entry, strict=True)
            )
            for entry in entries
        )

    def may_start(self, token: Token) -> bool:
        """Whether a phrase of this set could start with ``token`` (a cheap test first)."""
        return token.flat in self._first_words

    def longest_match(self, tokens: Sequence[Token], lenient: bool) -> int:
        """How many of ``tokens`` (from the first) form a phrase of this set; 0 when none."""
        if not tokens or tokens[0].flat not in self._first_words:
            return 0
        for size in range(min(self.longest, len(tokens)), 0, -1):
            if self.matches(tokens[:size], lenient):
                return size
        return 0


# -- names -----------------------------------------------------------------------------------------
#: Common Vietnamese family names. Left out on purpose, because as ordinary words they would be
#: taken for names far more often than they are names: La (là), Lại (again), Quan (quan tâm),
#: Vi (vi phạm), Mã (code), Phó (deputy), Đường (street), Từ (from), Phí (fee), Thi (exam),
#: Chung (chung cư), Đồng (đồng = VND), Cung (cung cấp), Ông (Mr), Viên (viên chức),
#: Trình (trình bày), Phương (phương án), Hoa, Hồng, Giang.
FAMILY = Words(
    """Nguyễn Trần Lê Phạm Hoàng Huỳnh Phan Vũ Võ Đặng Bùi Đỗ Hồ Ngô Dương Lý Lí Đào Đoàn Đinh Lâm
    Phùng Mai Tô Trịnh Trương Hà Cao Lưu Lương Kiều Tạ Vương Thái Châu Quách Tăng Hứa Lục Diệp
    Mạc Lã Thân Tôn Triệu Khúc Kim Đàm Khổng Bạch Tống Nghiêm Hàn Ninh Mẫn Âu Bế Nông Lò Lường
    Hầu Ứng Cù Doãn Khương Thạch Sầm Tiêu Nhan Mạch Lữ Lư Giáp Ung Bành Khưu Kha Tất Tiết Trác
    Bàng Cấn Dư Đổng Thiều Quản Nhâm Hy Lạc Vòng Thào Giàng Sùng Mùa"""
)
#: The middle names that mark a personal name even in lower case ("tran thi hoa").
MIDDLE_STRONG = Words("Văn Thị")
#: Frequent middle names: after a family name they make a name even in an all-capitals comment.
MIDDLE = Words(
    """Văn Thị Đức Hữu Ngọc Quốc Công Đình Xuân Minh Thanh Kim Thu Quang Mạnh Hoài Bảo Gia Khánh
    Anh Tuấn Hồng Thế Trọng Duy Huy Phương Thúy Mỹ Bích Thùy Tấn Như Nhật Hoàng Phúc"""
)
#: Frequent given-name syllables, to accept a lower-case or accent-less name after a cue.
GIVEN = Words(
    """An Ân Anh Ánh Bắc Bách Bảo Bằng Bích Biên Bình Bửu Cầm Cẩm Cảnh Châu Chi Chiến Chính Chung
    Công Cúc Cường Đại Đan Danh Đào Đạt Điệp Diễm Diệp Diệu Định Đoan Đông Đồng Dũng Dung Duy
    Duyên Dương Gấm Giang Giao Hà Hải Hân Hằng Hạnh Hào Hảo Hậu Hiền Hiển Hiếu Hiệp Hòa Hoà Hoa
    Hoài Hoan Hoàn Hoàng Học Hồng Huân Huệ Hùng Hưng Hương Hường Hữu Huy Huyền Kha Khải Khang
    Khánh Khoa Khôi Khuê Kiên Kiệt Kim Kỳ Lâm Lan Lành Lầu Lệ Liên Liễu Linh Loan Lộc Lợi Long
    Luân Lực Lương Ly Lý Mai Mạnh Minh My Mỹ Nam Nga Ngân Nghĩa Ngọc Nguyên Nguyệt Nhàn Nhân
    Nhật Nhi Nhiên Nhung Như Ninh Oanh Phát Phong Phú Phúc Phụng Phùng Phước Phương Phượng Quân
    Quang Quế Quốc Quý Quyên Quyết Quỳnh Sang Sáu Sơn Sỹ Sĩ Tài Tâm Tân Tấn Tám Tạo Tèo Thạch
    Thái Thắm Thân Thắng Thanh Thành Thảo Thế Thi Thịnh Thơ Thoa Thông Thu Thư Thuận Thục Thương
    Thủy Thúy Thùy Thy Tiến Tiên Tín Tình Toàn Trâm Trang Trí Triết Trinh Trọng Trúc Trung
    Trường Tú Tuấn Tùng Tường Tuyền Tuyết Uyên Văn Vân Vi Việt Vinh Vĩnh Vũ Vy Xuân Yến A B C D
    E"""
)
#: A family-name-like word and the next word making a common word, not a name ("Hồ Sơ").
COMPOUNDS = Phrases(
    """Hồ_sơ Hồ_bơi Hồ_nước Lê_la Lý_do Lý_lịch Lý_thuyết Lý_luận Đỗ_xe Đỗ_đạt Thái_độ Thái_quá
    Chu_đáo Tôn_trọng Tôn_giáo Lưu_ý Lưu_trú Lưu_trữ Lưu_lại Lưu_động Nghiêm_túc Nghiêm_khắc
    Nghiêm_trọng Thân_thiện Thân_nhân Thân_chủ Đào_tạo Tiêu_cực Tiêu_chuẩn Tiêu_chí Tiêu_dùng
    Hứa_hẹn Cao_tốc Cao_cấp Cao_điểm Cao_tuổi Mai_mốt Tăng_ca Tăng_cường Tăng_giá Ứng_dụng
    Ứng_xử Ứng_cử Ứng_tuyển Hầu_hết Hầu_như Kiều_bào Đoàn_thể Đoàn_viên Đoàn_thanh_niên
    Lương_hưu Lương_tháng Nông_nghiệp Nông_thôn Nông_dân Đàm_phán Đàm_thoại Khổng_lồ Phạm_vi
    Phạm_nhân Phạm_lỗi Vũ_khí Vũ_trụ Hàn_quốc Châu_âu Châu_á Châu_phi Trịnh_trọng Kim_loại
    Kim_cương Cù_lao Tạ_ơn Mạch_điện Tống_đạt Lục_soát Giáp_ranh Phạm_văn_bản Phạm_văn_phòng
    Lê_phi Hồ_thị_trấn Hồ_thị_xã Lê_thị_xã Lê_thị_trấn"""
)
#: Places and heroes whose names start with a family name: kept as places ("Hà Nội").
PLACES = Phrases(
    """Hà_Nội Hà_Giang Hà_Tĩnh Hà_Nam Hà_Đông Hà_Tiên Hà_Cối Cao_Bằng Cao_Lãnh Thái_Bình
    Thái_Nguyên Lâm_Đồng Ninh_Bình Ninh_Thuận Ninh_Kiều Phan_Thiết Phan_Rang Châu_Đốc Châu_Thành
    Lý_Sơn Hồ_Chí_Minh Hồ_Gươm Hồ_Tây Bạch_Mai Bạch_Đằng Hoàng_Mai Hoàng_Sa Lê_Chân Ngô_Quyền
    Kim_Mã Kim_Bôi Kim_Bảng Tô_Lịch Mai_Châu Mai_Sơn Hàn_Quốc Châu_Âu Châu_Á Hậu_Giang Hạ_Long"""
)
#: A word just before a capitalised name that makes it a place: "đường Lê Lợi", "trường THPT Phan
#: Đình Phùng", "xã Nguyễn Huệ", "P. Phạm Ngũ Lão", "Bệnh viện Bạch Mai".
PLACE_BEFORE = Words(
    """đường phố lộ phường quận huyện xã tỉnh tp trấn trường thpt thcs viện bv chợ cầu làng thôn ấp
    xóm kiệt hẻm ngõ p q tx tt ga chùa đình đền street road district ward"""
)

# -- self-introduction cues ------------------------------------------------------------------------
#: After "tên" one of these makes a cue: "tên tôi (là)", "tên em", "ten e la".
PRONOUNS = Words("tôi em mình tui tớ t e con cháu anh chị")
#: Whatever follows is a name: "họ tên:", "họ và tên", "ký tên", "my name is" (and "tên:", "name:").
STRONG_CUES = Phrases("họ_tên họ_và_tên ký_tên kí_tên tên_là my_name_is người_nộp")
#: A name follows only when it starts with a family name: "tôi là", "em là", "I am".
WEAK_CUES = Phrases(
    "tôi_là em_là mình_là tui_là e_là con_là cháu_là i_am this_is tôi_tên em_tên mình_tên"
)
#: Words of address before a name: "chị huỳnh như", "ông Tạ Quang Bửu".
HONORIFICS = Words("anh chị ông bà cô chú bác em cháu con mr mrs ms miss dr")
#: Words that end a name after a cue ("tôi là Lê Hoa và ...").
NAME_STOP = Words(
    """là và với ở tại nhà sinh số năm tuổi đi đến nộp làm xin có không được rất cán bộ người của
    đã đang muốn cảm ơn nhưng mà thì nên vì cho hỏi gọi and the at from in i was is"""
)

# -- numbers ---------------------------------------------------------------------------------------
#: Digits spelled out, for "không chín một hai ...".
DIGIT_WORDS = {
    "không": "0", "một": "1", "mốt": "1", "hai": "2", "ba": "3", "bốn": "4", "tư": "4", "năm": "5",
    "lăm": "5", "sáu": "6", "bảy": "7", "bẩy": "7", "tám": "8", "chín": "9",
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
#: Accent-less spellings, for words typed without any ("khong chin mot"); "tu" and "lam" are left
#: out: typed without accents they are "từ" and "làm" far more often than "tư" and "lăm".
DIGIT_WORDS_FOLDED = {fold(w): d for w, d in DIGIT_WORDS.items() if fold(w) not in ("tu", "lam")}
#: Units after a number that make it a price, not an identifier.
CURRENCY = Words("đồng đ vnd vnđ k nghìn ngàn triệu tr tỷ tỉ usd dollar dollars")
#: Words just before a number that make a shorter number an identifier ("STK 12345678").
NUMBER_CUES = Phrases(
    """stk tk số_tài_khoản tài_khoản sđt sdt đt dt điện_thoại phone tel mobile zalo cmnd cccd cmt
    căn_cước định_danh mst mã_số_thuế thuế hộ_chiếu passport hc account"""
)
#: Letters glued in front of a number that are a cue, not part of a code ("sđt0912…").
GLUED_CUES = Words("sđt sdt đt dt zalo cccd cmnd cmt stk tk mst phone tel so số sdt đt")

# -- e-mail ----------------------------------------------------------------------------------------
#: Mail domains that make "x at gmail" an address even without "dot com".
PROVIDERS = frozenset(
    """gmail googlemail yahoo ymail hotmail outlook live msn icloud proton protonmail aol gmx zoho
    fpt vnn viettel vnpt""".split()
)
TLDS = frozenset("com vn net org edu gov info io me co biz us uk int".split())

# -- addresses -------------------------------------------------------------------------------------
#: Parts that locate a house by themselves: "ngõ 34", "hẻm 45", "khu phố 3", "thôn Đông".
ADDRESS_STRONG = Phrases(
    """ngõ ngách hẻm kiệt khu_phố kp tổ_dân_phố tdp xóm ấp thôn khóm số_nhà nhà_số căn_hộ làng
    khu_tập_thể ktt"""
)
#: Parts that need another part to locate a house: "số 12", "nhà 5B", "tổ 7", "tòa B".
ADDRESS_WEAK = Phrases("số nhà tổ khối đội lô block tòa tòa_nhà chung_cư")
#: Streets and administrative units: shared by thousands, kept alone, removed when chained.
ADDRESS_AREA = Phrases(
    """đường phố đại_lộ phường xã quận huyện thị_xã thị_trấn tỉnh thành_phố tp p q tx tt khu_đô_thị
    kđt district ward city province"""
)
#: Words before a bare house number that say an address follows ("ở 78 Trần Hưng Đạo").
ADDRESS_CUES = Phrases("ở tại địa_chỉ đc dc đ_c address về nhà_ở sống_ở")
#: Measure words: "3 Lần", "2 Người" are counts, never a house number and a street.
UNITS = Words(
    """lần ngày giờ tiếng phút tuần tháng năm người cái bộ bản tờ trang quầy phòng tầng cửa nơi chỗ
    cơ đồng triệu nghìn ngàn km sao điểm tuổi xe chiếc buổi lượt hồ cán"""
)
