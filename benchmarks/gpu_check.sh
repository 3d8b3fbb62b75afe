#!/usr/bin/env bash
# The GPU paths in one go, on a machine with a CUDA device and the `test` extra (which has warp):
#   1. the tests' CUDA variants: PPO with its policy on the GPU, MuJoCo Warp against gymnasium,
#      the collector and PPO on the device, --sim warp trainings and a design run through the
#      sandbox on the GPU;
#   2. speed: raw MuJoCo Warp, our Warp simulator, our PPO on it (WARP_ENVS worlds);
#   3. one HalfCheetah candidate of STEPS steps, start to saved policy, through the sandbox:
#      --sim warp --device cuda, then --sim mujoco on --device cuda and cpu for comparison.
# Figures go to stdout; each part goes on if an earlier one failed, and the exit code says
# whether any did.
#
#   bash benchmarks/gpu_check.sh                        # 4096 worlds, 1M-step candidates
#   WARP_ENVS=1024 STEPS=200000 bash benchmarks/gpu_check.sh
#   WHEELS=DIR bash benchmarks/gpu_check.sh             # no package index there: install DIR's wheels
#                                                       # (benchmarks/offline_wheels.sh) and this checkout first
set -u
WHEELS=${WHEELS:+$(realpath "$WHEELS")}  # before the cd: a relative folder is the caller's
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl}
WARP_ENVS=${WARP_ENVS:-4096}
STEPS=${STEPS:-1000000}
OUT=${OUT:-$(mktemp -d)}
status=0

if [ -n "$WHEELS" ]; then
    (
        shopt -s nullglob
        wheels=("$WHEELS"/*.whl)
        joined="$OUT/wheels"  # offline_wheels.sh split the large wheels into parts
        mkdir -p "$joined"
        for part in "$WHEELS"/*.whl.part-aa; do
            cat "${part%aa}"* >"$joined/$(basename "${part%.part-aa}")"
            wheels+=("$joined/$(basename "${part%.part-aa}")")
        done
        if [ ${#wheels[@]} -eq 0 ]; then
            echo "no wheels in $WHEELS (benchmarks/offline_wheels.sh makes them)" >&2
            exit 2
        fi
        python3 -m pip install -q --no-index --no-deps "${wheels[@]}" &&
            python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . &&
            rm -r "$joined"
    ) || exit 2
fi

python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
    || exit 2

echo "== 1. tests on the GPU"
python3 -m pytest -q -rs tests/test_ppo.py tests/test_warpsim.py tests/test_warp_training.py -k cuda || status=1

echo "== 2. speed, $WARP_ENVS worlds"
python3 benchmarks/trainer_speed.py --envs HalfCheetah-v5 Ant-v5 --rows "raw warp" warpsim ours-warp \
    --warp-envs "$WARP_ENVS" --steps $((WARP_ENVS * 1000)) || status=1

echo "== 3. a $STEPS-step HalfCheetah candidate through the sandbox"
echo "   ('trained ... in' times the training alone; the total adds compiling, the critic and the analysis)"
for run in "warp cuda" "mujoco cuda" "mujoco cpu"; do
    set -- $run
    start=$(date +%s)
    python3 -m reward_designer.cli train examples/my_reward.py --env HalfCheetah-v5 --steps "$STEPS" \
        --sim "$1" --device "$2" --fitness examples/fitness_forward.py --episodes 2 --out "$OUT/$1-$2" \
        >"$OUT/$1-$2.log" 2>&1 || status=1
    grep -E "^(trained|error|- task score)" "$OUT/$1-$2.log"
    echo "   --sim $1 --device $2: $(($(date +%s) - start)) s in all (log: $OUT/$1-$2.log)"
done
exit $status
