"""Planning against time: the published plan of each model (its work, fleet and measured speed),
the schedule model that turns it into start and finish times, and how wrong past quotes were."""
