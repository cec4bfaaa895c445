"""Reading what a run left behind: the log summarised, a violation's timeline, the HTML page, the
Perfetto trace, the published schemas.  Reads simulator.engine's log format; runs nothing."""
