from shared.core.backoff import Backoff, exponential_delay


def test_doubles_from_the_first_delay_up_to_the_cap():
    assert [exponential_delay(n, 0.1, 5.0) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_a_long_outage_stays_at_the_cap():
    assert exponential_delay(100_000, 0.1, 5.0) == 5.0


def test_jitter_keeps_half_to_all_of_the_delay():
    delays = [exponential_delay(3, 1.0, 30.0, jitter=True) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


def test_a_success_starts_again_from_the_first_delay():
    backoff = Backoff(0.1, 5.0)
    assert [backoff.next() for _ in range(3)] == [0.1, 0.2, 0.4]
    backoff.reset()
    assert backoff.next() == 0.1
