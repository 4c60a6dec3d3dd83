#!/usr/bin/env bash
# Trains the default model shipped in models/default (Fashion-MNIST, 28x28 grayscale, class-conditional).
#
#   STEPS=<the step count in models/default/config.json> bash scripts/train_default_model.sh runs/default
#
# The recipe: a 0.9M-parameter Unet (dim 16, widths 16/32/64 at 28/14/7 pixels, full attention at
# 7x7) with a class embedding (10 garments + the null class; labels dropped to it with p = 0.2 so
# the same network is also the unconditional model classifier-free guidance needs), cosine
# schedule, v-prediction, min-SNR-5 loss weighting, batch 64, AdamW 3e-4, EMA 0.999, bf16
# autocast. It ran on one thread of a shared 2-core CPU (torch with 2 threads slows badly when the
# other core is busy); extra flags are passed on (e.g. --device cuda, --resume).
set -euo pipefail
OUT=${1:-runs/default}
STEPS=${STEPS:-16000}
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -m backends.pytorch.train --data fashion-mnist --out "$OUT" \
  --dim 16 --dim-mults 1,2,4 --schedule cosine --prediction v --loss-weighting min_snr \
  --class-conditional --cond-drop-prob 0.2 --bf16 \
  --steps "$STEPS" --batch-size 64 --lr 3e-4 --warmup-steps 500 --ema-decay 0.999 --ema-warmup 1000 \
  --sample-every 2000 --sample-steps 20 --sample-sampler dpmpp_2m --checkpoint-every 500 \
  --log-every 250 --num-threads 1 "${@:2}"
