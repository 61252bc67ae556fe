#!/bin/bash
# A preemptible multi-node run under SLURM (docs/gpus-and-clusters.md, "On a cluster"; docs/decisions.md decision 46).
# Submit with `sbatch docs/slurm.sh`; edit the #SBATCH lines and the train.run options to your
# cluster and data. One torchrun per node, joined by a c10d rendezvous on the first node; every
# node must see --data-root and --out (a shared file system: rank 0 writes the checkpoints and
# every process reads them on --resume). SIGTERM 5 minutes before the time limit (and on
# preemption, from SLURM itself) makes every process finish its step, write one checkpoint and
# exit with status 75; the job is then requeued and continues with --resume, also on another
# number of nodes or GPUs.
#SBATCH --job-name=topodistill
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.log

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun --kill-on-bad-exit=0 torchrun --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$SLURM_GPUS_ON_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" --rdzv-id "$SLURM_JOB_ID" \
    -m train.run --dataset waymo --data-root /data/waymo --out runs/waymo --stage all --resume &
run=$!
stopping=0
# The batch shell gets the time-limit signal (B:); pass SIGTERM on to every torchrun (srun forwards
# it to its tasks; torchrun passes it to its processes and waits for them).
trap 'stopping=1; kill -TERM "$run"' TERM
wait "$run"
status=$?
if [ "$stopping" = 1 ]; then  # interrupted by the trap: wait for the processes to write their checkpoint
    wait "$run"
    status=$?
fi
if [ "$stopping" = 1 ] || [ "$status" = 75 ]; then
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
