"""A merge inside a harness: the settings (defined once, `settings`), the session that owns the merge and runs the
per-task sequence (`session`), and the search record (`records`)."""
from .records import RECORD_NAME, default_output_dir, run_name
from .session import HarnessTask, MergeSession, preflight_plan
from .settings import SEARCH_KEYS, SETTINGS, Setting, Settings, flag_spell, lmms_spell, parse_settings

__all__ = ["HarnessTask", "MergeSession", "RECORD_NAME", "SEARCH_KEYS", "SETTINGS", "Setting", "Settings",
           "default_output_dir", "flag_spell", "lmms_spell", "parse_settings", "preflight_plan", "run_name"]
