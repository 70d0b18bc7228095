"""benchmarks/quality.py with every automatic run's time budget multiplied (the runs of this folder).

    python ho_tb.py 4 --datasets buenrostro2018 --models auto,lsi --folds 3 --max-bins 25000 \
        --n-importance 10 --shuffle-control none --seed 0 --out OUT
"""
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
factor = float(sys.argv[1])
sys.argv = ["benchmarks/quality.py", *sys.argv[2:]]
sys.path.insert(0, str(REPO / "python"))
from convnetvae import schedule  # noqa: E402

_rule = schedule._default_rule


def rule(*args, time_budget=1.0):
    return _rule(*args, time_budget=time_budget * factor)


schedule.AUTO_RULE = rule
runpy.run_path(str(REPO / "benchmarks" / "quality.py"), run_name="__main__")
