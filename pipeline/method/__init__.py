"""The job configuration turned into the method: smite_ops settings and the backbone to load."""
