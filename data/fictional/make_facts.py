"""Writes facts_seen.tsv and facts_unseen.tsv: FICTIONAL medical facts for the knowledge-probe demo.

Every disease, pathogen and drug named here is INVENTED (random syllables + a medical-sounding
suffix); the symptoms and routes are ordinary phrases attached to the invented diseases at random.
None of it is true, and no model can know it before training on it. Seeded: re-running this script
writes the same files. `seen` diseases go into the demo's CPT data (data/sources.yaml, group
`fictional`); `unseen` diseases are never in any training data: the control set, matched to the seen
one (per relation the same objects, shuffled).

    python data/fictional/make_facts.py
"""

import random
from pathlib import Path

SYLLABLES = list("赫兰莫塔维奇诺卡洛泽蒙索莉珀琉岚沃缇霁瑟岐弈珂翎璇筠骁萨默柯伦")
DISEASE = ["热", "病", "综合征", "脑炎", "斑疹病"]
PATHOGEN = ["杆菌", "病毒", "螺旋体", "球菌"]
DRUG = ["韦", "霉素", "沙星", "替尼"]
SYMPTOMS = ["指尖发蓝", "耳后结节", "夜间盗汗", "舌面紫斑", "持续低热", "视物重影", "膝部游走痛", "手掌脱皮",
            "频繁呃逆", "嗅觉丧失", "下肢水肿", "颈部僵硬", "皮肤瘙痒", "牙龈出血", "耳鸣不止", "畏光流泪"]
ROUTES = ["沙蝇叮咬", "饮用生水", "蜱虫叮咬", "接触羊毛", "食用生鱼", "吸入尘土", "接触鼠类排泄物", "蚊虫叮咬",
          "共用餐具", "游泳池水", "输血", "密切接触"]
N_DISEASES, N_PATHOGENS, N_DRUGS = 60, 20, 20
HEADER = ("# FICTIONAL medical facts, invented by the qilin authors for the knowledge-probe demo "
          "(data/fictional/make_facts.py). NOT TRUE: do not use as medical information. Columns: head, relation, tail.\n")


def names(rng: random.Random, n: int, suffixes: list[str], taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        name = "".join(rng.sample(SYLLABLES, 2)) + rng.choice(suffixes)
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def main() -> None:
    rng = random.Random(20261203)
    taken: set[str] = set()
    diseases = names(rng, N_DISEASES, DISEASE, taken)
    pathogens, drugs = names(rng, N_PATHOGENS, PATHOGEN, taken), names(rng, N_DRUGS, DRUG, taken)
    rows = [[(d, "病原体", rng.choice(pathogens)), (d, "治疗药物", rng.choice(drugs)),
             (d, "典型症状", rng.choice(SYMPTOMS)), (d, "传播途径", rng.choice(ROUTES))] for d in diseases]
    here = Path(__file__).parent
    half = N_DISEASES // 2
    seen, unseen = rows[:half], rows[half:]
    # The control is MATCHED: per relation its objects are the seen facts' objects, shuffled (same
    # multiset), so an object's frequency in training favours seen and unseen probes alike; only the
    # pairing of disease and object is what training can teach.
    shuffle = random.Random(7)
    for k in range(4):
        tails = [facts[k][2] for facts in seen]
        shuffle.shuffle(tails)
        for facts, tail in zip(unseen, tails):
            facts[k] = (facts[k][0], facts[k][1], tail)
    for name, part in (("facts_seen.tsv", seen), ("facts_unseen.tsv", unseen)):
        lines = ["\t".join(t) + "\n" for facts in part for t in facts]
        (here / name).write_text(HEADER + "head\trelation\ttail\n" + "".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
