"""report.md (and sweep plots) of ``persona-sim eval``, laid out like the paper's tables.

Table 1's columns (AUC, NDCG@5, HR@5, NDCG@10, HR@10, time), one row per
method, mean ± std over seeds. A sweep gets one row per variant and method
(Tables 3–5), and a plot per numeric swept key (Figure 5).
"""
from __future__ import annotations

from pathlib import Path

from ..methods import METHODS
from ..train.evaluation import CHUNK, DEVICE_CHUNK
from .verdict import eval_verdict, verdict_sentence

COLUMNS = (("auc", "AUC"), ("ndcg@5", "NDCG@5"), ("hr@5", "HR@5"), ("ndcg@10", "NDCG@10"), ("hr@10", "HR@10"))
USER_COLUMNS = tuple((f"user_{key}", label) for key, label in COLUMNS)


def _protocol(summary: dict) -> str:
    """What the test events are, in words."""
    negatives = summary["negatives"]
    if summary["protocol"] == "realtime":
        r = summary["realtime"]
        split = (f"each user's first {r['fraction']:.0%} of interactions" if r["by"] == "position" else
                 f"each user's interactions before the {r['fraction']:.0%} time quantile")
        return (f"{split} are history (the last of them selects models); every later interaction is a test event "
                f"ranked against {negatives} sampled negatives, from the interactions before it")
    return f"each user's last item against {negatives} sampled negatives; second-to-last item for model selection"


def _label(name: str) -> str:
    return METHODS[name].label if name in METHODS else name


def _cell(m: dict, key: str, seeds: int) -> str:
    return f"{m[key]:.4f} ± {m['std'][key]:.4f}" if seeds > 1 else f"{m[key]:.4f}"


def _rows(methods: dict, seeds: int, prefix: list[str], columns=COLUMNS) -> list[str]:
    return ["| " + " | ".join(prefix + [_label(name)] + [_cell(m, k, seeds) for k, _ in columns]
                              + [_time(m.get("modelled_ms"), m.get("modelled_compute_ms")), f"{m['ms_per_case']:.3f}"]) + " |"
            for name, m in methods.items()]


def _ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _time(ms: float | None, compute_ms: float | None) -> str:
    """Modelled time per adaptation, end to end (compute, the paper's "time consumption", in brackets)."""
    if ms is None:
        return "–"
    if compute_ms is None or compute_ms == ms:
        return _ms(ms)
    return f"{_ms(ms)} ({_ms(compute_ms)})"


_CHOICES = {   # what a bundle chose on validation: summary key -> (setting, what the values mean)
    "editor_shift": ("train.editor_shift", "the share of takeover-like samples; 0.0 is the paper's training"),
    "groups": ("persona.groups", "Persona (m)'s groups: the paper's text, or the authors' code"),
    "joint_groups": ("persona.groups", "the groups of Persona (m) joint"),
}


def _choice_lines(variants: list[dict]) -> list[str]:
    """Which editor training and groups each seed's bundle kept, when it chose on validation."""
    lines = []
    for v in variants:
        label = f"{v['label']}: " if v["label"] else ""
        for key, (setting, meaning) in _CHOICES.items():
            chosen = [r.get(key) for r in v["per_seed"]]
            if any(c is None or isinstance(c, list) for c in chosen):   # no choice made (or an older summary)
                continue
            lines.append(f"- {label}`{setting}` kept on validation, per seed: {', '.join(str(c) for c in chosen)} "
                         f"— {meaning}")
    return lines


def render(summary: dict) -> str:
    seeds = len(summary["seeds"])
    model = summary["model"]
    arch = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}[model["arch"]]
    variants = summary["variants"]
    swept = list(variants[0]["settings"])
    lines = [f"# persona-sim eval: {summary['scenario']}", "",
             f"- dataset `{summary['dataset']}`, protocol **{summary['protocol']}** ({_protocol(summary)})",
             f"- model **{arch}** (hidden {model['hidden']}, {model['blocks']} block(s), head of "
             f"{model['head_layers']} layers, last {model['adaptive_layers']} adaptive)",
             f"- seeds {', '.join(map(str, summary['seeds']))}; cells are the mean" + (" ± sample std" if seeds > 1 else ""),
             *_choice_lines(variants),
             f"- wall time {summary['wall_seconds']:.1f} s", "", "## Verdict", ""]
    labels = {name: _label(name) for name in METHODS}
    lines += [f"- {(v['label'] + ': ') if v['label'] else ''}{verdict_sentence(v.get('verdict') or eval_verdict(v['per_seed']), labels)}"
              for v in variants]
    lines += ["", "## Results", ""]
    head = [s for s in swept] + ["Method"] + [c for _, c in COLUMNS] + ["time / adaptation (compute)", "ms / case"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        lines += _rows(v["methods"], seeds, [str(v["settings"][k]) for k in swept])
    lines += ["", "Cells are means over test events. Time / adaptation: modelled for the scenario's median device "
              "and link, end to end, and in brackets its compute alone — the paper's \"time consumption\" "
              "(device methods: steps × the profile's fine-tuning step × the step's FLOPs relative to a whole-model "
              "step on a full history, all compute; cloud methods: cloud compute of one request and applying it, "
              "plus upload and download; `persona-sim run` measures it with queueing, sharing, jitter and loss). "
              f"ms / case: wall time of the whole method (shared layers, editors or on-device training, scoring) "
              f"per test case, batched {CHUNK} cases at a time ({DEVICE_CHUNK} for on-device training), on this "
              "machine; the median over seeds.", ""]
    if summary["protocol"] == "realtime":
        lines += ["## Per user, over several positives (how the authors' code scores the real-time part)", "",
                  "A user's positives and all their events' negatives ranked together: HR@k = any positive in the "
                  "top k, NDCG@k normalised by min(#positives, k) ideal hits, AUC over (positive, negative) pairs; "
                  "the mean over users.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for v in variants:
            lines += _rows(v["methods"], seeds, [str(v["settings"][k]) for k in swept], USER_COLUMNS)
        lines.append("")
    for plot in summary.get("plots", []):
        lines += [f"![{plot}]({plot})", ""]
    shares = [(v["label"], name, r["methods"][name]["prototype_share"]) for v in variants
              for r in v["per_seed"][:1] for name in r["methods"] if name in METHODS
              and (METHODS[name].uses_groups or METHODS[name].uses_joint_groups)]
    if shares:
        lines += ["## Prototype assignment (first seed: share of test cases per group)", ""]
        lines += [f"- {(label + ': ') if label else ''}{_label(name)}: " + ", ".join(f"{s:.2f}" for s in share)
                  for label, name, share in shares]
        lines.append("")
    return "\n".join(lines)


def _numeric(variants: list[dict], key: str) -> bool:
    return all(isinstance(v["settings"][key], (int, float)) and not isinstance(v["settings"][key], bool)
               for v in variants)


def plot_sweeps(out: Path, summary: dict) -> list[str]:
    """The sweep's plots: the gain map (Δ NDCG@5 over static against one or two numeric swept keys) and, when
    one numeric key is swept alone, NDCG@5/10 and AUC against its values."""
    variants = summary["variants"]
    keys = list(variants[0]["settings"])
    plots = _plot_gain(out, variants, keys) if 1 <= len(keys) <= 2 and all(_numeric(variants, k) for k in keys) else []
    if len(keys) != 1 or not _numeric(variants, keys[0]):
        return plots
    from .plots import plt, save, style  # plots selects the Agg backend before pyplot loads

    key = keys[0]
    xs = [v["settings"][key] for v in variants]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
    for ax, metric in zip(axes, ("ndcg@5", "ndcg@10", "auc")):
        for method in variants[0]["methods"]:
            ys = [v["methods"][method][metric] for v in variants]
            err = [v["methods"][method]["std"][metric] for v in variants]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=_label(method), **style(method))
        ax.set_xscale("log" if min(xs) > 0 and max(xs) / min(xs) >= 10 else "linear")
        ax.set_xlabel(key)
        ax.set_title(metric.upper().replace("@", "@"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"accuracy against {key}")
    return plots + [save(fig, out, f"sweep-{key.replace('.', '-')}.png")]


def _plot_gain(out: Path, variants: list[dict], keys: list[str]) -> list[str]:
    """Δ NDCG@5 of each method over static (mean over seeds, ± the std of the paired per-seed differences)
    against the first swept key; one panel per value of the second."""
    from .plots import plt, save, style  # plots selects the Agg backend before pyplot loads

    verdicts = [v.get("verdict") or eval_verdict(v["per_seed"]) for v in variants]
    if not verdicts[0]:
        return []
    x_key, panel_key = keys[0], (keys[1] if len(keys) == 2 else None)
    panels = sorted({v["settings"][panel_key] for v in variants}) if panel_key else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), constrained_layout=True,
                             squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        rows = [(v["settings"][x_key], d) for v, d in zip(variants, verdicts)
                if panel_key is None or v["settings"][panel_key] == panel]
        rows.sort(key=lambda r: r[0])
        for method in verdicts[0]:
            ax.errorbar([x for x, _ in rows], [d[method]["delta"] for _, d in rows],
                        yerr=[d[method]["delta_std"] or 0.0 for _, d in rows], marker="o", capsize=3,
                        label=_label(method), **style(method))
        ax.axhline(0.0, color="grey", lw=0.8)
        xs = [x for x, _ in rows]
        ax.set_xscale("log" if min(xs) > 0 and max(xs) / min(xs) >= 10 else "linear")
        ax.set_xlabel(x_key)
        ax.set_title(f"{panel_key} = {panel}" if panel_key else "gain over static")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Δ NDCG@5 vs static")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Persona's gain over the static model")
    return [save(fig, out, "gain-map.png")]


