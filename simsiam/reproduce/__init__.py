"""The paper as a tracked grid: suites of one-switch trials (`suites`) and a claim-by-claim report
with the paper's number, ours over seeds and a verdict that follows the numbers (`report`)."""

from simsiam.reproduce.report import Verdict, claim_rows, paired_test, render_markdown, verdict, verdict_counts
from simsiam.reproduce.suites import CLAIMS, SUITES, Claim, TrialRun, plan_trials

__all__ = ["CLAIMS", "SUITES", "Claim", "TrialRun", "Verdict", "claim_rows", "paired_test", "plan_trials",
           "render_markdown", "verdict", "verdict_counts"]
