"""The reviewer's HTML report of a run and the review signals behind it."""
