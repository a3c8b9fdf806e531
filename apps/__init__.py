"""The top of the house: the `snnc` command line and the functions that write its outputs."""
