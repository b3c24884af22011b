"""Learning-rate selection for the tuned-lr arm, from the lr grid's records.

rule (which lr a cell gets, what it still has to run) <- records (the lr grid's records, read
by run id) <- tuned_config (conf/experiment/tuned_lr.yaml, written from the choices) <- cli
(``python -m sm3repro.arms.lr_selection``). The report's lr section and scripts/run_arms.py read
the same modules.
"""
