"""Decision quality: how soon a rule set pauses campaigns that turn bad, and how often it pauses
healthy ones, measured on labelled synthetic campaigns through the guard's own engine.

Workload (seeded): campaigns sending 50 to 50,000 messages (log-uniform) over 1 to 14 days, in
business hours, in bursts (hourly volumes drawn from a gamma distribution). Healthy campaigns:
0.5-2% hard bounces, 0.02-0.08% complaints, 1-3% soft bounces, 0.2-1% unsubscribes, 40% Gmail
recipients. A bad campaign turns, at a random send between 20% and 80% of its volume, into a
stale list (8-15% hard bounces) or an offensive one (0.3-1% complaints), half each. Bounces
arrive 2-90 s after their send, complaints 5 minutes to 2 days after (log-normal, median ~2 h);
every event carries its send's message id.

Per rule set: bad campaigns paused after their turn, missed, paused before their turn; the
detection delay in sends made after the turn until the pause (median, p90); and the share of
healthy campaigns ever paused. A campaign stops sending when it is paused.

The frontier (bench/frontier.png): the median delay on stale lists against the share of healthy
campaigns paused, for each rule set, for a CUSUM of hard bounces (2% against 8%) at alarm levels
from 5 to 17, and for the bound no detector can beat: the CUSUM that knows each campaign's own
healthy and bad rates (optimal, Moustakides 1986), its delay at the false-alarm rate that pauses
that share of the healthy campaigns from Siegmund's approximations (Lorden's ln(ARL0) / I to
first order; `optimal_delay`).

Many small campaigns on one sending domain (bench/quality/senders.py, its workload in its docstring): sending
domains of 40-100 campaigns each below `min_volume`, some burning together from a turn, scored with
rules/domains/sender-domain.yaml beside rules/default.yaml and with rules/default.yaml alone: the delay from a
burning domain's turn to its scope pause in pooled sends and minutes, the share of healthy domains paused, and
the bound for the pooled rate. `--only senders` runs this scenario alone and splices its section into the report.

    python -m bench.quality [--healthy 1500] [--bad 500] [--seed 1] [--healthy-domains 400] [--burning-domains 100]
    python -m bench.quality --only senders [--workers 1]
"""
