#!/usr/bin/env bash
# Train the N-body and force-field checkpoints (HEGNN L=3 and EGNN twins) all at once
# on one machine (meant for a GPU), each with the same wall-clock budget, as in the
# H200 run of docs/results/gpu-h200/. The shipped checkpoints were trained on CPU with
# the commands in their cards; the MD17-trajectory ones early-stop in minutes there.
#   scripts/train-checkpoints.sh [minutes per run, default 7.5]
# HEGNN picks the command (default `hegnn`; e.g. HEGNN="python -m hegnn_cli").
set -u
minutes=${1:-7.5}
read -r -a hegnn <<< "${HEGNN:-hegnn}"
mkdir -p runs data/generated

train() {  # train LOG [hegnn train arguments...]
    local log=$1
    shift
    "${hegnn[@]}" train "$@" --set "optim.max_minutes=$minutes" > "runs/$log.log" 2>&1 &
}

egnn=(--set model.lmax=null)
train ff-aspirin-hegnn --config configs/md17-ff-aspirin.yaml
train ff-aspirin-egnn --config configs/md17-ff-aspirin.yaml "${egnn[@]}" --set name=md17-aspirin-ff-egnn
train ff-ethanol-hegnn --config configs/md17-ff-ethanol.yaml
train ff-ethanol-egnn --config configs/md17-ff-ethanol.yaml "${egnn[@]}" --set name=md17-ethanol-ff-egnn

nbody=data/generated/nbody_egnn_5.npz
[ -f "$nbody" ] || "${hegnn[@]}" data nbody --protocol egnn --bodies 5 --out "$nbody" > runs/nbody-data.log 2>&1
train nbody-hegnn --config configs/nbody-egnn5.yaml
train nbody-egnn --config configs/nbody-egnn5.yaml "${egnn[@]}" --set name=nbody-charged5-egnn
wait
