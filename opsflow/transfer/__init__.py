"""Experiment transfer (seed 003, MyTardis sync): a provider copies an experiment's datafiles
to consumer sites; each site advances its copy through a state machine on a scheduled tick."""
