"""Writes facts_seen.tsv and facts_unseen.tsv: FICTIONAL medical facts for the knowledge-probe demo.

Every disease, pathogen and drug named here is INVENTED (two syllables + a medical-sounding suffix);
the symptoms and routes are ordinary phrases attached to the invented diseases at random. None of it
is true, and no model can know it before training on it. Seeded: re-running this script writes the
same files. `seen` diseases go into the demo's CPT data (data/sources.yaml, group `fictional`);
`unseen` diseases are never in any training data: the control set, matched to the seen one (per
relation the same objects, shuffled).

Sized for the 5M-parameter demo model (docs/BENCHMARKS.md has the runs that chose it): 12 seen diseases
(48 facts) repeated often rather than many facts seen a few times, each seen disease with objects of
its own (no two share a pathogen, drug, symptom or route), and no syllable used in two names, so that
the only thing that tells two facts apart is the pairing that training can teach.

    python data/fictional/make_facts.py
"""

import random
from pathlib import Path

SYLLABLES = list("赫兰莫塔维奇诺卡洛泽蒙索莉珀琉岚沃缇霁瑟岐弈珂翎璇筠骁萨默柯伦"
                  "芮熙璞琰瑾珩璟琛晔煜昊旻暄曦曜炘烨焱淼沅泓涟澜漪沐溪汐渺潆"
                  "岑峤嵘崧巍屹峦岷嵩楠桦枫棠榕梓樾杉柘栎茗荇萱蘅芷苡菡蔓葳蕤"
                  "琅玥玳珞琮瑛璨玮")
DISEASE = ["热", "病", "综合征", "脑炎", "斑疹病"]
PATHOGEN = ["杆菌", "病毒", "螺旋体", "球菌"]
DRUG = ["韦", "霉素", "沙星", "替尼"]
SYMPTOMS = ["指尖发蓝", "耳后结节", "夜间盗汗", "舌面紫斑", "持续低热", "视物重影", "膝部游走痛", "手掌脱皮",
            "频繁呃逆", "嗅觉丧失", "下肢水肿", "颈部僵硬", "皮肤瘙痒", "牙龈出血", "耳鸣不止", "畏光流泪"]
ROUTES = ["沙蝇叮咬", "饮用生水", "蜱虫叮咬", "接触羊毛", "食用生鱼", "吸入尘土", "接触鼠类排泄物", "蚊虫叮咬",
          "共用餐具", "游泳池水", "输血", "密切接触"]
N_DISEASES, N_PATHOGENS, N_DRUGS = 24, 12, 12
HEADER = ("# FICTIONAL medical facts, invented by the qilin authors for the knowledge-probe demo "
          "(data/fictional/make_facts.py). NOT TRUE: do not use as medical information. Columns: head, relation, tail.\n")


def names(rng: random.Random, n: int, suffixes: list[str], pool: list[str]) -> list[str]:
    """n names of two syllables + a suffix; no syllable is used twice across all names (pool shrinks)."""
    out = []
    for _ in range(n):
        out.append(pool.pop() + pool.pop() + rng.choice(suffixes))
    return out


def main() -> None:
    rng = random.Random(20261203)
    pool = SYLLABLES[:]
    rng.shuffle(pool)
    diseases = names(rng, N_DISEASES, DISEASE, pool)
    pathogens, drugs = names(rng, N_PATHOGENS, PATHOGEN, pool), names(rng, N_DRUGS, DRUG, pool)
    objects = [rng.sample(pathogens, N_PATHOGENS), rng.sample(drugs, N_DRUGS), rng.sample(SYMPTOMS, len(SYMPTOMS)),
               rng.sample(ROUTES, len(ROUTES))]
    rows = [[(d, rel, objects[k][i % len(objects[k])]) for k, rel in enumerate(("病原体", "治疗药物", "典型症状", "传播途径"))]
            for i, d in enumerate(diseases)]
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
