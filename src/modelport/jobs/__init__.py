"""Jobs: the edges other than the transports that drive the dataplane pieces.

Batch jobs over files (`modelport batch`): `sources` finds the input files and splits them into
partitions, `reading` streams a partition's rows in record batches, `scoring` scores one
partition into its part file (`score_partition`, the picklable unit of work a scale-out
scheduler maps over its workers), `job_manifest` records what is committed, and `driver` runs a
whole job. The public entry point is `modelport.batch.run`.
"""
