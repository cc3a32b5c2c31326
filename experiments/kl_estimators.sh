#!/usr/bin/env bash
# How wrong each KL estimator is along real GRPO runs (issue 36): grpo.py logs, on the first minibatch of every
# update epoch, the exact KL over the vocabulary beside k1, k2, k3 and the importance-corrected k3 on the same
# samples, and the cosine and norm ratio of each one's gradient in the logits to the exact KL's
# (kl_estimators.py). Four configurations (KL coefficient 0.02 = grpo.py's default, and 0.5; 1 and 4 update
# epochs per rollout batch), grpo.py's defaults otherwise (gold reward, 20 batches), 3 seeds. Prints per
# configuration, epoch group (e1: the first epoch, pi = pi_old; e2+: the later ones) and estimator the mean
# over the run (from iteration 2: the first has KL 0) of: the exact KL, the estimate, its bias and relative
# bias, the spread of its per-response error, and its gradient's cosine and norm ratio, each mean +-
# standard error over seeds; and, with matplotlib, figures/kl_estimators.png (one run over iterations).
# Needs an SFT model (default out/sft/ckpt.pt: python sft.py); a finished run is skipped (it resumes).
#   bash experiments/kl_estimators.sh ["1 2 3"] [sft checkpoint]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
SFT=${2:-out/sft/ckpt.pt}
OUT=out/kl_estimators
CONFIGS=("kl0.02_e1|--kl_coef=0.02 --ppo_epochs=1" "kl0.02_e4|--kl_coef=0.02 --ppo_epochs=4"
         "kl0.5_e1|--kl_coef=0.5 --ppo_epochs=1" "kl0.5_e4|--kl_coef=0.5 --ppo_epochs=4")
for seed in $SEEDS; do
    for c in "${CONFIGS[@]}"; do
        name=${c%%|*}; flags=${c#*|}; dir=$OUT/$name/s$seed
        if [ -f "$dir/done" ]; then continue; fi
        rm -rf "$dir"; mkdir -p "$dir"
        # shellcheck disable=SC2086
        if python grpo.py --out_dir="$dir" --sft_path="$SFT" --seed="$seed" --log_interval=1 --eval_interval=20 \
                --n_print=0 $flags > "$dir/log.txt" 2>&1; then
            touch "$dir/done"; echo "$name, seed $seed: done"
        else
            echo "$name, seed $seed: FAILED (see $dir/log.txt)"
        fi
    done
done
python - "$OUT" <<'PY'
import glob, os, sys
from experiments.table import cell, markdown, read_rows
out = sys.argv[1]
table = []
for conf in sorted(os.listdir(out)):
    runs = [read_rows(d) for d in sorted(glob.glob(os.path.join(out, conf, "s*"))) if os.path.exists(os.path.join(d, "done"))]
    for e in ("e1", "e2+"):
        for k in ("k1", "k2", "k3", "k3_is"):
            per_seed = {c: [] for c in ("exact", "est", "bias", "rel", "sd", "cos", "ratio")}
            for rows in runs:
                rows = [r for r in rows if f"kl_est/{e}/{k}_grad_cos" in r and r["iter"] >= 2]
                if not rows:
                    continue
                mean = lambda key: sum(r[f"kl_est/{e}/{key}"] for r in rows) / len(rows)
                exact, est = mean("exact"), mean(k)
                per_seed["exact"].append(exact); per_seed["est"].append(est); per_seed["bias"].append(est - exact)
                per_seed["rel"].append(100 * (est / exact - 1)); per_seed["sd"].append(mean(f"{k}_err_sd"))
                per_seed["cos"].append(mean(f"{k}_grad_cos")); per_seed["ratio"].append(mean(f"{k}_grad_ratio"))
            if per_seed["exact"]:
                table.append([conf, e, k] + [cell(per_seed[c], s) for c, s in
                             (("exact", ".3f"), ("est", ".3f"), ("bias", ".3f"), ("rel", ".0f"), ("sd", ".3f"),
                              ("cos", ".2f"), ("ratio", ".2f"))] + [len(per_seed["exact"])])
print(markdown(["config", "epochs", "estimator", "exact KL", "estimate", "bias", "bias %", "error sd (per response)",
                "grad cos", "grad norm ratio", "seeds"], table))
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(print("note: matplotlib is not installed: no figure (pip install matplotlib)"))
rows = read_rows(os.path.join(out, "kl0.02_e4", "s1")) if os.path.isdir(os.path.join(out, "kl0.02_e4", "s1")) else []
rows = [r for r in rows if "kl_est/e2+/k3_grad_cos" in r]
if rows:
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    it = [r["iter"] for r in rows]
    ax[0].plot(it, [r["kl_est/e2+/exact"] for r in rows], "k-", lw=2, label="exact")
    for k in ("k1", "k2", "k3", "k3_is"):
        ax[0].plot(it, [r[f"kl_est/e2+/{k}"] for r in rows], label=k)
        ax[1].plot(it, [r[f"kl_est/e2+/{k}_grad_cos"] for r in rows], label=k)
    ax[0].set(xlabel="rollout batch", ylabel="sequence KL (nats), epochs 2-4", title="value")
    ax[1].set(xlabel="rollout batch", ylabel="cosine with the exact KL's gradient", title="gradient (logits)")
    ax[0].legend(); ax[1].legend()
    fig.suptitle("GRPO, kl_coef 0.02, 4 update epochs, seed 1: each KL estimator against the exact KL")
    fig.tight_layout()
    os.makedirs("figures", exist_ok=True)
    fig.savefig("figures/kl_estimators.png", dpi=120)
    print("wrote figures/kl_estimators.png")
PY
