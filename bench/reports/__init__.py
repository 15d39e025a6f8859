"""The reports: from records to tables, intervals, reference fronts, figures, the EAF, the web page
and the leaderboard. Imports the core; never the runtime except the leaderboard's driver, which runs jobs.
"""
