"""Reading what a job is given: videos (probe, decode, encode), input expansion, reference sets."""
