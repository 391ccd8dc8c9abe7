"""Example analyses to run with ``datalake process`` (``--fn datalake.examples.dimuon:mass_spectrum``)."""
