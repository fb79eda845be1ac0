"""Cleaning: identifiers found and replaced, clean medical text (full of numbers) left alone."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

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


# Issue 14: realistic clinical sentences, each with the identifiers that must go (kind, text).
CLINICAL_PII = [
    ("患者张某某，男，45岁，因反复胸痛3天入院。", [("name", "张某某")]),
    ("患者李建国，男，62岁，既往高血压病史10年。", [("name", "李建国")]),
    ("病人王**，女，38岁，主诉头痛2周。", [("name", "王**")]),
    ("姓名：赵丽华 性别：女 年龄：56岁", [("name", "赵丽华")]),
    ("姓名：欧阳明，住院号：20230115。", [("name", "欧阳明")]),
    ("患儿刘某，男，5岁，发热伴皮疹2天。", [("name", "刘某")]),
    ("患者周伟，男性，40岁，吸烟20年。", [("name", "周伟")]),
    ("身份证号：110105491231002，联系电话：010 6234 5678。", [("id_card", "110105491231002"),
                                                        ("landline", "010 6234 5678")]),
    ("身份证号为320102800101123，已核实。", [("id_card", "320102800101123")]),
    ("身份证号码11010519491231002X，已核实。", [("id_card", "11010519491231002X")]),
    ("家属联系电话021 62345678，请于工作时间联系。", [("landline", "021 62345678")]),
    ("联系电话（0755）8234 5678。", [("landline", "（0755）8234 5678")]),
    ("电话：0571-8765 4321", [("landline", "0571-8765 4321")]),
    ("手机：138 1234 5678，微信：zhang_doc88", [("mobile", "138 1234 5678"), ("wechat", "zhang_doc88")]),
    ("家住上海市徐汇区漕溪北路398号3号楼1202室，步行来诊。", [("address", "上海市徐汇区漕溪北路398号3号楼1202室")]),
    ("住址：广东省深圳市南山区科技园南区，职业：教师。", [("address", "广东省深圳市南山区科技园南区")]),
    ("现住北京市朝阳区建国路88号院2号楼。", [("address", "北京市朝阳区建国路88号院2号楼")]),
    ("户籍地址：河南省郑州市金水区，长期居住外地。", [("address", "河南省郑州市金水区")]),
    ("患者陈某某，女，71岁，家住杭州市西湖区文三路100号。", [("name", "陈某某"), ("address", "杭州市西湖区文三路100号")]),
    ("邮箱：patient.li@qq.com，复诊前请发送检查结果。", [("email", "patient.li@qq.com")]),
    ("患者黄某，男，50岁，糖尿病史5年。", [("name", "黄某")]),
]
# Identifiers the patterns do not claim (a named-entity model would): counted as missed, by design.
CLINICAL_MISSED = [
    ("主治医师：刘明，副主任医师。", "刘明"),
    ("患者的女儿张小红陪同就诊。", "张小红"),
    ("住在幸福小区3栋，独居。", "幸福小区3栋"),
]
CLINICAL_CLEAN = [
    "予阿莫西林胶囊0.5g口服，每日3次，疗程7天。",
    "血压150/95mmHg，心率88次/分，体温37.8℃。",
    "2023年3月15日复查，空腹血糖6.8mmol/L，HbA1c 7.2%。",
    "ISBN 978-7-117-26543-2，人民卫生出版社，2018年。",
    "参见《内科学》第9版（ISBN 9787117266538）第356页。",
    "白细胞计数10.5×10^9/L，中性粒细胞百分比78%。",
    "肌酐132 μmol/L，尿素氮8.2 mmol/L，eGFR 45 mL/min/1.73m²。",
    "第21号染色体三体综合征（唐氏综合征）。",
    "心电图示V1-V3导联ST段抬高0.2 mV。",
    "住院号20230115001，床号12。",
    "患者高热，伴寒战，体温最高39.5℃。",
    "患者黄疸3天，尿色加深。",
    "患者男，65岁，因咳嗽咳痰2周就诊。",
    "患者于2022年12月行冠状动脉支架植入术。",
    "病理号：S2023-01234，免疫组化示ER(+)、PR(+)。",
    "胰岛素每日总量0.5 U/kg，分3次皮下注射。",
    "血钾3.2 mmol/L，补钾10%氯化钾15 ml。",
    "术后第3天引流量50 ml，第5天拔除引流管。",
    "复诊地址：本院门诊楼三层。",
    "信号通路中第2号受体的表达下调。",
    "国家卫健委2021年发布的指南建议每年筛查一次。",
    "2019-03-12至2019-03-25住院，出院诊断：2型糖尿病（E11.9）。",
]


def test_clinical_identifiers_caught_missed_and_false_positives():
    caught = planted = 0
    for text, expected in CLINICAL_PII:
        stats = Counter()
        out = clean.scrub_pii(text, stats)
        for kind, value in expected:
            planted += 1
            caught += value not in out and clean.PLACEHOLDERS[kind] in out
        assert stats == Counter(f"pii.{k}" for k, _ in expected), (text, out, stats)
    missed = sum(value in clean.scrub_pii(text) for text, value in CLINICAL_MISSED)
    false = [t for t in CLINICAL_CLEAN if clean.clean_text(t, Counter()) != t]
    print(f"PII fixture: {caught}/{planted} caught, {missed + planted - caught} missed "
          f"({missed} by design: names without a cue, addresses without a house number), "
          f"{len(false)}/{len(CLINICAL_CLEAN)} clean sentences changed")
    assert caught == planted and not false, false
    assert missed == len(CLINICAL_MISSED)  # the documented limits: if one is caught now, update the docs


def test_identifiers_in_ids_are_scrubbed_with_distinct_placeholders_unless_kept():
    stats = Counter()
    a = clean.clean_record({"id": "13812345678-visit1", "text": "复诊"}, stats)
    b = clean.clean_record({"id": "13912345678-visit1", "text": "复诊"}, stats)
    assert a["id"].startswith("[PHONE-") and a["id"].endswith("]-visit1") and a["id"] != b["id"]
    assert "138" not in a["id"] and stats["pii.mobile"] == 2
    kept = clean.clean_record({"id": "13812345678-visit1", "text": "复诊"}, Counter(), scrub_ids=False)
    assert kept["id"] == "13812345678-visit1"
    assert clean.clean_record({"id": "cmexam-12", "text": "x"}, Counter())["id"] == "cmexam-12"


FRAGMENTS = ["13812345678", "138 1234 5678", "+86 139-1234-5678", "010-62345678", "(0571) 8765-4321",
             "11010519491231002X", "110105491231002", "6222 0212 3456 7894", "4111111111111111", "a.b@c-d.cn",
             "@", "QQ号：123456789", "qq 98765", "微信：wx_abc123", "VX:abcdef1", "weixin:helloabc", "住址：",
             "北京市海淀区", "中关村大街27号", "3号楼2单元", "号", "姓名：张三", "患者王某，男", "病人李×", "患儿",
             "男", "45岁", "，", "。", " ", "-", "0", "12", "345", "2024", "的", "病", "在", "路", "地址 ：", "姓名 :",
             "人民路一百号", "胡同8号院", "张家村", "7号", "WeChat: wxid_1234", "vx：abc1234", "qQ:54321"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14), st.booleans())
def test_gated_scrub_equals_every_pattern_run(parts, hashed):
    """The per-pattern gates only skip patterns that cannot match: the text and the counts are those of
    running all twelve patterns in order."""
    text = "".join(parts)
    want_stats, got_stats = Counter(), Counter()
    want = text
    for kind, pattern, valid in clean._PII:
        want = pattern.sub(lambda m, k=kind, v=valid: clean._replace(m, k, v, want_stats, hashed), want)
    assert clean.scrub_pii(text, got_stats, hashed) == want and got_stats == want_stats
