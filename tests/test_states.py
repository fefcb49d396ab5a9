import pytest

from nbrunner.errors import InvalidTransition
from nbrunner.states import DONE, TRANSITIONS, RunStatus, check_transition


def test_every_state_has_a_row_and_done_states_are_final() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    for state in DONE:
        assert TRANSITIONS[state] == frozenset()


def test_queued_can_only_start_or_be_cancelled() -> None:
    check_transition(1, RunStatus.QUEUED, RunStatus.STARTING)
    check_transition(1, RunStatus.QUEUED, RunStatus.CANCELLED)
    with pytest.raises(InvalidTransition, match="run 1 is queued and cannot become running"):
        check_transition(1, RunStatus.QUEUED, RunStatus.RUNNING)


def test_refusal_from_an_ended_state_says_it_has_ended() -> None:
    with pytest.raises(InvalidTransition, match=r"nothing \(it has ended\)"):
        check_transition(7, RunStatus.SUCCEEDED, RunStatus.RUNNING)


def test_pause_and_resume_are_allowed_only_while_running() -> None:
    check_transition(1, RunStatus.RUNNING, RunStatus.PAUSED)
    check_transition(1, RunStatus.PAUSED, RunStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition(1, RunStatus.QUEUED, RunStatus.PAUSED)


def test_the_transition_table_is_the_documented_one() -> None:
    """Who may become what: the store, the service and every client follow this table."""
    S = RunStatus
    assert TRANSITIONS[S.QUEUED] == {S.STARTING, S.CANCELLED}
    assert TRANSITIONS[S.STARTING] == {S.QUEUED, S.RUNNING, S.FAILED, S.CANCELLED, S.LOST}
    assert TRANSITIONS[S.RUNNING] == {S.PAUSED, *DONE}
    assert TRANSITIONS[S.PAUSED] == {S.RUNNING, *DONE}
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.LOST} <= DONE  # and any newer end
    assert not DONE & {S.QUEUED, S.STARTING, S.RUNNING, S.PAUSED}


def test_a_refusal_names_the_state_and_every_way_out_in_one_line() -> None:
    with pytest.raises(InvalidTransition) as refused:
        check_transition(1, RunStatus.QUEUED, RunStatus.RUNNING)
    assert str(refused.value) == (
        "run 1 is queued and cannot become running; from queued it can become: cancelled, starting"
    )
    with pytest.raises(InvalidTransition) as ended:
        check_transition(7, RunStatus.SUCCEEDED, RunStatus.RUNNING)
    assert str(ended.value) == (
        "run 7 is succeeded and cannot become running; "
        "from succeeded it can become: nothing (it has ended)"
    )


def test_what_holds_a_slot_and_what_is_done() -> None:
    held = {s for s in RunStatus if s.holds_slot}
    assert held == {RunStatus.STARTING, RunStatus.RUNNING, RunStatus.PAUSED}
    assert {s for s in RunStatus if s.is_done} == DONE
    assert str(RunStatus.TIMED_OUT) == "timed_out"
