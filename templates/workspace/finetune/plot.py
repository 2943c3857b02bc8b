"""Charts: training and evaluation loss from the Trainer's log history; eval.py's scores per model."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_losses(log_history: list[dict], path: Path) -> Path | None:
    return _by_step(log_history, "loss", "loss", path)


def plot_rewards(log_history: list[dict], path: Path) -> Path | None:
    """GRPO: the mean reward of the sampled answers per logged step, training and held out."""
    return _by_step(log_history, "reward", "mean reward of the sampled answers", path)


def _by_step(log_history: list[dict], key: str, title: str, path: Path) -> Path | None:
    """The training value of key and its held-out one (eval_KEY) by step; None when there is nothing to draw."""
    plt = _pyplot()
    train = [(e["step"], e[key]) for e in log_history if key in e]
    evals = [(e["step"], e[f"eval_{key}"]) for e in log_history if f"eval_{key}" in e]
    if plt is None or not (train or evals):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        # markers too: a short run logs a handful of points, which a bare line can hide
        ax.plot(*zip(*train), marker="." if len(train) < 50 else None, label=f"train {key}")
    if evals:
        ax.plot(*zip(*evals), marker="o", label=f"eval {key}")
    ax.set_xlabel("step")
    ax.set_ylabel(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scores(report: dict, path: Path) -> Path | None:
    """One bar chart per metric, a bar per model (perplexity on a log scale)."""
    plt = _pyplot()
    models = report["models"]
    keys = list(dict.fromkeys(k for scores in models.values() for k in scores))
    if plt is None or not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        names = [n for n in models if key in models[n]]
        ax.bar(names, [models[n][key] for n in names], color=["#999999", "#2a7ab9", "#e07b39"][: len(names)])
        ax.set_title(key + (" (lower is better)" if key == "perplexity" else ""), fontsize=9)
        if key == "perplexity":
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)  # a bar chart's axis starts at zero, so small differences look small
        for i, name in enumerate(names):
            ax.annotate(f"{models[name][key]:.4g}", (i, models[name][key]), ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"{report['scenario']}: {report['examples']} {report['split']} examples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
