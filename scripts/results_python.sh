# Sourced by the scripts/results_*.sh runners from the checkout's root ($root): sets $python to
# an interpreter with the project's dependencies — $PYTHON with this checkout on PYTHONPATH when
# it is set (e.g. the GPU machine's python3), else scripts/setup.sh's .venv.
if [ -n "${PYTHON:-}" ]; then
  python="$PYTHON"
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
else
  bash scripts/setup.sh
  python=.venv/bin/python
fi
