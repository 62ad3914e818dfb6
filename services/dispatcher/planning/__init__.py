"""The dispatcher's planning: measuring each model's speed from its results, and the planner that
each second turns the unfinished jobs into ETAs, deadline risks, replicas and spills."""
