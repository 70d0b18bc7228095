"""benchmarks/quality.py with the automatic length's time budget multiplied (scratch)."""
import sys, runpy
tb = float(sys.argv[1]); sys.argv = ["benchmarks/quality.py", *sys.argv[2:]]
sys.path.insert(0, "/work/main/python")
from convnetvae import schedule
_rule = schedule._default_rule
def rule(*a, time_budget=1.0):
    return _rule(*a, time_budget=time_budget * tb)
schedule.AUTO_RULE = rule
runpy.run_path("/work/main/benchmarks/quality.py", run_name="__main__")
