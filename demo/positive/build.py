"""Writes the positive-control world (synthetic, written for the project): fictional diseases with
the drug that treats each, the organ it affects and the test that confirms it, stated in many
phrasings across pool samples in the four pool formats, mixed with unrelated samples; and a
cloze benchmark about a subset of those facts. Nothing here is medical knowledge.

    python demo/positive/build.py          # rewrites demo/positive/data/ (deterministic)

A tiny model cannot know these facts at the start; recall finds the samples about the asked
diseases; a random pick of the same size mostly does not. The benchmark questions are worded
unlike every pool sample, so the contamination guard lets the facts through.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data"
SEED = 7
N_DISEASES, N_ASKED = 200, 30

HEADS = "赤青玄素苍紫白墨金银碧丹绛琥翠霜"
MIDS = "鳞岚霞汐砂萤棘藤珀澜翎雾岩芷苓蘅"
TAILS = ["热", "症", "瘟", "痹", "疳", "癣"]
DRUG_A = "苍玄素丹霜澄黛曜岑琅"
DRUG_B = "蓝冥宁灵砂芙蕤瑶琪璃"
DRUG_FORMS = ["散", "片", "丸", "膏", "汤", "胶囊"]
ORGANS = ["肝脏", "肺脏", "肾脏", "脾脏", "胰腺", "胃部", "心脏", "甲状腺", "皮肤", "骨骼"]
TEST_A = "晶棱环星镜频"
TEST_B = ["光谱检测", "血清试验", "染色镜检", "穿刺培养", "磁共振扫描"]

# Pool phrasings (none repeats the benchmark's question wording)
# Half of the answers open with the fact itself, as an answer to a short question would.
DRUG_SAY = [
    ("得了{d}该吃什么药？", "{x}。{d}一般用{x}来治，按疗程服用，多数人两周内好转。"),
    ("{d}怎么治疗比较好？", "{x}。临床上治{d}主要靠{x}，配合休息效果更好。"),
    ("医生给我开了{x}，这个药是治什么的？", "{x}是专门用来控制{d}的药物。"),
    ("请介绍一下{x}。", "{x}主要用于{d}患者，能较快缓解症状。"),
    ("{d}复发了还能用原来的药吗", "可以继续使用{x}，{d}对它一般不会耐药。"),
    ("孩子确诊{d}，用药上要注意什么？", "{x}，剂量按体重减半：儿童{d}同样以{x}为主。"),
]
ORGAN_SAY = [
    ("{d}会伤到哪里？", "{x}。{d}主要侵犯{x}，严重时{x}功能明显下降。"),
    ("{d}为什么要定期复查{x}？", "因为{d}的病变集中在{x}，复查能看出进展。"),
    ("我{x}不舒服，会不会是{d}？", "{d}确实以{x}受损为主要特点，建议就诊。"),
    ("{d}是哪个部位的病", "{x}。{d}是一种{x}疾病，其他部位很少受累。"),
    ("{d}晚期有什么表现", "{x}衰竭：晚期{d}会导致{x}衰竭，需要尽早干预。"),
    ("讲讲{d}的病理特点", "{d}的特征性改变出现在{x}，可见局部结构破坏。"),
]
TEST_SAY = [
    ("怀疑{d}要做什么检查？", "{x}。确诊{d}要靠{x}，阳性即可诊断。"),
    ("{x}能查出什么病？", "{x}最主要的用途是确认{d}。"),
    ("{d}的诊断标准是什么", "{x}。目前公认以{x}结果作为{d}的诊断依据。"),
    ("做了{x}是阳性，说明什么", "{x}阳性提示患有{d}，应尽快开始治疗。"),
    ("{d}和普通感冒怎么区分", "{x}。两者症状相似，做一次{x}就能把{d}区分出来。"),
    ("体检要不要加做{x}", "有{d}家族史的人建议加做{x}，便于早期发现。"),
]
QUESTION = {"drug": "{d}的首选治疗药物是____", "organ": "{d}主要累及的器官是____", "test": "{d}的确诊依据是____"}
GENERAL = [
    ("帮我写一句生日祝福。", "祝你生日快乐，愿新的一岁平安顺遂、笑口常开。"),
    ("推荐一本适合入门的编程书。", "可以从一本讲Python基础的书开始，边学边做小练习。"),
    ("怎样提高英语听力？", "每天坚持听二十分钟原声材料，先泛听再精听。"),
    ("周末去哪里放松比较好？", "可以去郊外公园散步，或者约朋友去看一场展览。"),
    ("如何做一道番茄炒蛋？", "鸡蛋先炒至凝固盛出，再炒番茄出汁，最后回锅翻匀加盐。"),
    ("北京的秋天有什么特点？", "天高云淡，气温适中，是一年中最舒服的季节。"),
    ("解释一下什么是复利。", "复利是把利息计入本金继续生息，时间越长效果越明显。"),
    ("怎么养好一盆绿萝？", "放在散射光处，土干了再浇透，夏天注意通风。"),
]


def _names(rng: random.Random) -> list[dict]:
    seen, out = set(), []
    while len(out) < N_DISEASES:
        d = rng.choice(HEADS) + rng.choice(MIDS) + rng.choice(TAILS)
        x = rng.choice(DRUG_A) + rng.choice(DRUG_B) + rng.choice(DRUG_FORMS)
        t = rng.choice(TEST_A) + rng.choice(TEST_B)
        if d in seen or any(d[:2] == o["disease"][:2] for o in out):
            continue
        seen.add(d)
        out.append({"disease": d, "drug": x, "organ": rng.choice(ORGANS), "test": t})
    return out


def _record(fmt: str, q: str, a: str) -> dict:
    if fmt == "alpaca":
        return {"instruction": q, "input": "", "output": a}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    if fmt == "messages":
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    return {"question": q, "answer": a}


def main() -> None:
    rng = random.Random(SEED)
    world = _names(rng)
    pools = {"alpaca": [], "sharegpt": [], "messages": [], "qa": []}
    fmts = list(pools)
    for k, w in enumerate(world):
        for facts, key in ((DRUG_SAY, "drug"), (ORGAN_SAY, "organ"), (TEST_SAY, "test")):
            for j, (q, a) in enumerate(facts):
                fmt = fmts[(k + j) % 4]
                pools[fmt].append(_record(fmt, q.format(d=w["disease"], x=w[key]), a.format(d=w["disease"], x=w[key])))
    for j, (q, a) in enumerate(GENERAL * 12):
        pools[fmts[j % 4]].append(_record(fmts[j % 4], q + ("" if j < 8 else f"（第{j // 8}种说法）"), a))
    OUT.mkdir(parents=True, exist_ok=True)
    for fmt, rows in pools.items():
        rng.shuffle(rows)
        (OUT / f"pool_{fmt}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    asked = world[:N_ASKED]
    bench, i = [], 0
    for w in asked:
        for key in ("drug", "organ", "test"):
            pool_of = [o[key] for o in world if o[key] != w[key]]
            wrong = rng.sample(sorted(set(pool_of)), 3)
            options = wrong + [w[key]]
            rng.shuffle(options)
            bench.append(
                {
                    "id": i,
                    "question": QUESTION[key].format(d=w["disease"]),
                    "A": options[0],
                    "B": options[1],
                    "C": options[2],
                    "D": options[3],
                    "answer": "ABCD"[options.index(w[key])],
                    "explanation": "",
                }
            )
            i += 1
    (OUT / "benchmark" / "val").mkdir(parents=True, exist_ok=True)
    (OUT / "benchmark" / "val" / "fiction.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bench), encoding="utf-8"
    )

    print(
        f"{len(world)} diseases ({N_ASKED} asked), {sum(map(len, pools.values()))} pool samples, {len(bench)} questions"
    )


if __name__ == "__main__":
    main()
