"""Replay of a node's image workload through image policies (issue 17); see bench/policy/run.py.

trace: the workload format (JSON lines) and its reader; workloads: the generated ones;
policies: the kubelet's image GC model and the collection's run (through its own planning
code); sim: the discrete-event replay and its figures; bound: the PFOO-L lower bound;
report: the table.
"""
