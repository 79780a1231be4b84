"""The `batchyard` command line: `batchyard run JOB.json` and `batchyard oss …`.

Entry points only: they parse arguments, build Settings, call the engine and render.
"""
