"""Cleaning: identifiers found and replaced, clean medical text (full of numbers) left alone."""

from collections import Counter

from qilin.data import clean

PLANTED = {
    "mobile": ["13812345678", "+86 139-1234-5678", "8615912345678"],
    "landline": ["010-62345678", "(0755)82345678", "0571-8765432-123"],
    "id_card": ["11010519491231002X", "440308199001011239"],
    "email": ["zhang.san@163.com", "li_si+med@hospital.org.cn"],
    "bank_card": ["6222020200000000006", "4111 1111 1111 1111"],
}
CLEAN = [
    "血压<140/90mmHg，空腹血糖6.1-7.0mmol/L，P<0.05。",
    "成人剂量每次500mg，每日3次，疗程7-14天；2020-01-15复查。",
    "ICD-10编码E11.9；住院时间2019年3月12日至2019年3月25日。",
    "白细胞计数12000000000/L，体重65kg，身高170cm，体表面积1.75m²。",
    "样本编号20190312001234567（18位但校验位不符）110105194912310021。",
    "参考文献：中华医学杂志，2018，98（12）：901-905。",
    "QQ群讨论了病例，微信公众号发布了指南。",
]


def test_every_planted_identifier_is_replaced_and_counted():
    for kind, values in PLANTED.items():
        for v in values:
            stats = Counter()
            out = clean.scrub_pii(f"患者联系方式：{v}，请复诊。", stats)
            assert v not in out and clean.PLACEHOLDERS[kind] in out, (kind, v, out)
            assert stats == Counter({f"pii.{kind}": 1}), (kind, v, stats)


def test_labelled_identifiers_keep_their_label():
    stats = Counter()
    assert clean.scrub_pii("加QQ：12345678或微信号：wx_doctor01咨询", stats) == "加QQ：[QQ]或微信号：[WECHAT]咨询"
    assert stats == Counter({"pii.qq": 1, "pii.wechat": 1})


def test_clean_medical_text_is_untouched():
    for text in CLEAN:
        stats = Counter()
        assert clean.clean_text(text, stats) == text and not stats, (text, stats)


def test_checksums():
    assert clean.id_checksum_ok("11010519491231002X") and not clean.id_checksum_ok("110105194912310021")
    assert clean.luhn_ok("4111111111111111") and not clean.luhn_ok("4111111111111112")


def test_normalise_fullwidth_keeps_chinese_punctuation():
    stats = Counter()
    assert clean.clean_text("ＣＴ示Ｈｂ１２０ｇ／Ｌ，（正常）：是？\u3000\u200b结束\r\n", stats) == "CT示Hb120g/L，（正常）：是？ 结束\n"
    assert stats == Counter({"normalised": 1})


def test_html_removed_but_comparisons_kept():
    stats = Counter()
    assert clean.clean_text("<p>发热&nbsp;3天<br/>体温&gt;38℃</p>，P<0.05", stats) == "发热 3天\n体温>38℃\n，P<0.05"
    assert stats == Counter({"html": 1})


def test_clean_record_skips_ids_and_answers():
    stats = Counter()
    rec = clean.clean_record({"id": "ａ1", "question": " ＡＢ ", "answer": "B", "options": {"A": "１", "B": "x"}}, stats)
    assert rec == {"id": "ａ1", "question": "AB", "answer": "B", "options": {"A": "1", "B": "x"}}
    qa = clean.clean_record({"id": "q", "question": "问", "answer": "请拨打13812345678。"}, stats)
    assert qa["answer"] == "请拨打[PHONE]。" and stats["pii.mobile"] == 1


def test_html_written_on_purpose_is_kept():
    page = "下面是网页：<!DOCTYPE html>\n<html>\n<body><p>你好</p></body></html>"
    assert clean.strip_html(page) == page
