"""The search: genomes, heuristic seeds, the NSGA-II engine and the run driver."""
