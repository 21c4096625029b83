"""What the commands share for parsing and printing, and nothing else.

``common`` holds the flags every tool takes, one-line errors, exit statuses and the quiet Optuna
set-up; ``search_settings`` parses search's flags into a frozen ``SearchSettings``;
``search_output`` is what search prints. Library code never imports this package.
"""
