"""A support desk built with AG2's group patterns that survives a SIGKILL mid-run and resumes exactly.

    python examples/support_desk_pattern.py          # offline: scripted models, no key, no network

A ``DefaultPattern`` with four agents: ``triage`` classifies the customer's issue with a tool that
returns a ``ReplyResult`` (a handoff to ``billing`` and an update of the shared
``ContextVariables``); ``billing`` issues a refund with a tool, then hands off by an
``OnContextCondition`` (``${refunds} >= 1``); ``supervisor`` approves and hands off to ``closer``
through an LLM condition (``OnCondition``); ``closer`` answers and the pattern's after-work ends
the chat.

What it shows:

1. an uninterrupted run, for reference (a store of its own);
2. the same chat in a child process that is SIGKILLed while the agent of step 5 is working;
3. a restart (fresh agents and pattern, as a new process would build them) attaches
   ``Persistency`` to the pattern and calls ``initiate_group_chat`` with the same question: the run
   continues from its last checkpoint and ends exactly as the reference (transcript, every agent's
   history, ContextVariables), with no model call made twice;
4. a second question, passed AG2's way (the transcript plus the new message), is stored as the
   next run.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autogen import Agent, ConversableAgent
from autogen.agentchat.group import (
    AgentTarget,
    ContextExpression,
    ContextVariables,
    ExpressionContextCondition,
    OnCondition,
    OnContextCondition,
    ReplyResult,
    StringLLMCondition,
)
from autogen.agentchat.group.multi_agent_chat import initiate_group_chat
from autogen.agentchat.group.patterns import DefaultPattern

from persistency import Persistency, provider_from_url
from persistency.scripted import keep_registered, scripted_config

QUESTION = "I was charged twice for order 42. Can I get the $30 back?"
FOLLOW_UP = "Thanks! Will it show on the same card?"
SESSION = "desk-42"
SCRIPTS: dict[str, list[str | dict[str, Any]]] = {
    "triage": [{"tool": "classify", "arguments": {"issue_type": "billing"}}, "The refund goes back to that card."],
    "billing": [{"tool": "refund", "arguments": {"order": 42, "amount": 30}}],
    "supervisor": [{"tool": "transfer_to_closer_1", "content": "Refund of $30 for order 42 approved."}],
    "closer": ["Your $30 refund for order 42 is on its way."],
}
Turn = Callable[[int], None]


def classify(issue_type: str, context_variables: ContextVariables) -> ReplyResult:
    """Record the issue type and hand the customer to the right desk."""
    context_variables["issue_type"] = issue_type
    context_variables["classified"] = int(context_variables.get("classified") or 0) + 1
    target = AgentTarget(_AGENTS["billing"])
    return ReplyResult(message=f"Classified as {issue_type}.", target=target, context_variables=context_variables)


def refund(order: int, amount: int, context_variables: ContextVariables) -> ReplyResult:
    """Refund an order (offline: only counted in the context variables)."""
    context_variables["refunds"] = int(context_variables.get("refunds") or 0) + 1
    context_variables["refunded"] = int(context_variables.get("refunded") or 0) + amount
    return ReplyResult(message=f"Refunded ${amount} for order {order}.", context_variables=context_variables)


_AGENTS: dict[str, ConversableAgent] = {}


class DeskPattern(DefaultPattern):
    """A DefaultPattern that tells ``on_turn`` which step each agent is about to produce (to crash there)."""

    on_turn: Turn | None = None

    def prepare_group_chat(self, max_rounds: int, messages: Any) -> Any:
        """AG2's preparation, then a first reply function on every agent that reports the step."""
        prepared = super().prepare_group_chat(max_rounds=max_rounds, messages=messages)
        report_steps(self.agents, prepared[7], self.on_turn)
        return prepared


def report_steps(agents: list[ConversableAgent], groupchat: Any, on_turn: "Turn | None") -> None:
    """Keep the scripted clients registered, and tell ``on_turn`` each step about to be produced."""
    for a in agents:  # after AG2's own update_agent_state hook, which rebuilds the client
        keep_registered(a)
    if on_turn is None:
        return

    def report(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        on_turn(len(groupchat.messages) + 1)
        return False, None

    for agent in groupchat.agents:
        agent.register_reply([Agent, None], report, position=0)


def build_desk(call_log: str | None = None, on_turn: "Turn | None" = None) -> tuple["DeskPattern", ConversableAgent]:
    """Fresh agents and pattern (what every process builds); returns the pattern and the customer."""
    extra = {"digest": True, **({"call_log": call_log} if call_log else {})}

    def agent(name: str, system: str, functions: list[Any] | None = None) -> ConversableAgent:
        a = ConversableAgent(
            name,
            system_message=system,
            llm_config=scripted_config(SCRIPTS[name], model=f"scripted-{name}", speaker=name, **extra),
            human_input_mode="NEVER",
            functions=functions or [],
        )
        _AGENTS[name] = a
        return a

    triage = agent("triage", "Classify the customer's issue with the classify tool.", [classify])
    billing = agent("billing", "Handle billing issues; refund with the refund tool.", [refund])
    supervisor = agent("supervisor", "Approve refunds, then transfer to the closer.")
    closer = agent("closer", "Tell the customer what was done.")
    billing.handoffs.add_context_condition(
        OnContextCondition(
            target=AgentTarget(supervisor), condition=ExpressionContextCondition(ContextExpression("${refunds} >= 1"))
        )
    )
    supervisor.handoffs.add_llm_condition(
        OnCondition(target=AgentTarget(closer), condition=StringLLMCondition("Transfer when the refund is approved."))
    )
    customer = ConversableAgent("customer", llm_config=False, human_input_mode="NEVER", default_auto_reply="Thanks.")
    pattern = DeskPattern(
        initial_agent=triage,
        agents=[triage, billing, supervisor, closer],
        user_agent=customer,
        context_variables=ContextVariables(data={"refunds": 0, "classified": 0}),
    )
    pattern.on_turn = on_turn
    return pattern, customer


def snapshot(manager: Any, pattern: DeskPattern, result: Any) -> dict[str, Any]:
    """What must be equal between two runs: transcript, every agent's history, the context variables."""
    agents = [*manager.groupchat.agents, manager]
    return {
        "transcript": [dict(m) for m in manager.groupchat.messages],
        "histories": {a.name: {p.name: [dict(m) for m in ms] for p, ms in a.chat_messages.items()} for a in agents},
        "context": pattern.context_variables.to_dict(),
        "chat_history": [dict(m) for m in result.chat_history],
    }


def run(url: str, call_log: str | None = None, on_turn: Turn | None = None) -> dict[str, Any]:
    """One process's work: build the desk, attach Persistency to the pattern, ask the question."""
    pattern, _ = build_desk(call_log, on_turn)
    with Persistency(url, SESSION).attach(pattern) as feature:
        result, _context, _last = initiate_group_chat(pattern, messages=QUESTION, max_rounds=20)
        return snapshot(feature.manager, pattern, result)  # the manager the pattern built for this chat


def _kill_at(step: int) -> Turn:
    def on_turn(now: int) -> None:
        if now == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_turn


def main(argv: list[str] | None = None) -> int:
    """Run the demo (or, with --child, the chat that is killed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", help="where the stores go (default: a temporary directory)")
    parser.add_argument("--kill-at", type=int, default=5, help="the step whose agent is killed while working")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    base = Path(args.dir or tempfile.mkdtemp(prefix="support-desk-"))
    calls = str(base / "calls.log")
    if args.child:
        run(f"file://{base / 'store'}", calls, _kill_at(args.kill_at))
        return 3  # not killed

    print("1. reference run, never interrupted")
    reference = run(f"file://{base / 'reference'}", str(base / "reference-calls.log"))
    for i, m in enumerate(reference["transcript"], 1):
        print(f"   {i}. {m.get('name')}: {str(m.get('content'))[:70]}")

    print(f"2. the same chat in a child process, SIGKILLed while step {args.kill_at} is being produced")
    child = subprocess.run([sys.executable, __file__, "--child", "--dir", str(base), "--kill-at", str(args.kill_at)])
    print(f"   child exit code {child.returncode} (-9: killed)")
    store = provider_from_url(f"file://{base / 'store'}")
    print(f"   stored: {[c.checkpoint_id for c in store.list_checkpoints(SESSION)]}")

    print("3. restart: fresh agents, same code, Persistency(resume_latest) attached to the pattern")
    resumed = run(f"file://{base / 'store'}", calls)
    for key in ("transcript", "histories", "context", "chat_history"):
        print(f"   {key}: {'identical' if resumed[key] == reference[key] else 'DIFFERENT'}")
    n_calls = len(Path(calls).read_text().splitlines())
    n_ref = len(Path(base / "reference-calls.log").read_text().splitlines())
    print(f"   model calls: {n_calls} (crashed + resumed) vs {n_ref} (reference)")
    print(f"   context variables: {resumed['context']}")

    print("4. a second question, AG2's way: the transcript plus the new message")
    pattern2, _ = build_desk(calls)
    feature = Persistency(store, SESSION).attach(pattern2)
    history = [dict(m) for m in resumed["transcript"]] + [{"role": "user", "name": "customer", "content": FOLLOW_UP}]
    result2, _context2, last = initiate_group_chat(pattern2, messages=history, max_rounds=20)
    print(f"   {last.name}: {result2.chat_history[-1].get('content')}")
    runs = sorted({c.run_id for c in store.list_checkpoints(SESSION)})
    print(f"   runs stored: {runs}; last checkpoint {feature.last_checkpoint_id}")
    same = all(resumed[k] == reference[k] for k in ("transcript", "histories", "context", "chat_history"))
    print("resumed exactly" if same and n_calls == n_ref else "NOT EXACT")
    return 0 if same and n_calls == n_ref else 1


if __name__ == "__main__":
    sys.exit(main())
