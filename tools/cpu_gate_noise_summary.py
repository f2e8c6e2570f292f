import json, glob, re, sys, statistics
for tag in sys.argv[1:]:
    rows = {}
    for f in sorted(glob.glob(f"{tag}/run*.json"), key=lambda p: int(re.search(r"run(\d+)", p).group(1))):
        d = json.load(open(f))
        for stage, v in d["diffusers_perf"]["verdicts"].items():
            m = re.search(r"latency ([+-][\d.]+)% (?:within|>) (?:threshold )?([\d.]+)%", v["detail"]) or re.search(r"latency ([+-][\d.]+)%()", v["detail"])
            rows.setdefault(stage, []).append((float(m.group(1)), m.group(2), v["status"]))
        med = {b["extra_info"]["stage"]: b["stats"]["median"] for b in d["benchmarks"]}
    for stage, r in rows.items():
        ch = [x[0] for x in r]
        print(tag, stage, "n", len(ch), "min %+.1f max %+.1f" % (min(ch), max(ch)), "thr", set(x[1] for x in r), "statuses", {s: sum(1 for x in r if x[2]==s) for s in set(x[2] for x in r)})
        print("   ", " ".join(f"{c:+.0f}" for c in ch))
