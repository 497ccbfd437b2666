"""Text the simulator writes around corpus prompts: prefixes, follow-ups, scaffolds, system prompts.

All of it is written for this project (Apache-2.0). Corpus prompts say *what* is asked; these
pieces reproduce *how* different senders ask it: people add greetings, context and follow-ups;
evaluation harnesses wrap public benchmark items in fixed formats; coding agents send tool
output; enterprise jobs fill one template; distillation scaffolds demand long, step-by-step
answers. Each tuple is a catalogue the scenario YAML refers to by name.
"""

from __future__ import annotations

# --- organic chat -----------------------------------------------------------------------------

ORGANIC_PREFIXES: tuple[str, ...] = (
    "hey, ", "Hi! ", "hi ", "Hello. ", "Quick question: ", "Can you help me? ", "Help me out here. ",
    "Question: ", "ok so ", "So ", "I have a question. ", "Please help: ", "Good morning! ",
    "I need some help. ", "Hey there, ", "Hi, hope you can help. ", "Thanks in advance. ",
    "Another one: ", "Next question. ", "Random question, ", "ELI5: ", "Honest answer please: ",
    "For work: ", "For a school project: ", "Asking for a friend: ", "I'm stuck. ", "urgent: ",
    "Can you explain something? ", "Follow-up from earlier: ", "Hmm, ", "Okay. ", "Hi again. ",
    "Let me ask this differently. ", "One more thing: ", "Serious question. ", "Short question: ",
    "Need advice: ", "Curious: ", "Hello again! ", "Yo, ",
)

ORGANIC_SUFFIXES: tuple[str, ...] = (
    " Thanks!", " thanks", " Thank you.", " Please keep it short.", " Keep it brief.",
    " Explain like I'm five.", " Use bullet points.", " In simple terms please.",
    " Give me a few options.", " Be concise.", " Be detailed.", " Please be specific.",
    " Can you give an example?", " What do you think?", " Any ideas?", " ty", " pls",
    " I'm a beginner.", " I'm in a hurry.", " This is for a presentation tomorrow.",
    " Answer in Spanish.", " Answer in German, please.", " Reply in French.",
    " Under 200 words.", " Make it sound natural.", " Use a friendly tone.",
    " Format it as a table if possible.", " No jargon please.", " Cite sources if you can.",
    " Step by step please.", " Let's think about this carefully.", " Show your work.",
    " I already tried searching online.", " My boss asked me this.", " Be honest.",
    " Skip the disclaimers.", " Include pros and cons.", " With a summary at the end.", "?", "!!",
)

#: what people write after the first answer
FOLLOW_UPS: tuple[str, ...] = (
    "Can you elaborate on the second point?", "Make it shorter.", "Thanks! Can you make it more formal?",
    "That's not quite right. Try again.", "Why?", "Can you give me an example?", "Translate that into Spanish.",
    "Now summarise that in three bullet points.", "What about the downsides?", "Can you explain it more simply?",
    "ok and what if I want to do it in Python instead?", "Great, thanks. One more thing:",
    "Could you rewrite it as an email?", "What are the alternatives?", "Expand on that please.",
    "Is that really true? Double-check.", "Add a conclusion.", "Now make it funny.", "Give me 5 more.",
    "Shorter please, one paragraph.", "Can you put that in a table?", "How would this work in practice?",
    "Hmm, I don't think that's correct.", "Perfect. Now do the same for the next one.",
    "What sources support this?", "Explain the last part again.", "Can you add comments to the code?",
    "It throws an error. Can you fix it?", "That worked, thanks!", "What did you mean by that?",
    "Continue.", "go on", "more detail please", "Rewrite it for a 10 year old.",
    "Can you make a checklist from that?", "Make it sound less like AI.", "Write a title for it.",
    "And in German?", "What's the time complexity?", "Can you also handle the edge cases?",
    "Let's try a different approach.", "Summarise our conversation so far.",
    "Now write the unit tests.", "Turn it into a haiku.", "Give me the short version.",
    "How confident are you about that?", "Okay, and what would you recommend?",
    "Can you check my reasoning?", "Make the tone warmer.", "That's too long.",
)

#: one-off short messages that many people send verbatim
COMMON_SHORT: tuple[str, ...] = (
    "hi", "hello", "test", "Hello!", "hey", "What can you do?", "who are you", "Tell me a joke.",
    "What's the weather like today?", "thanks", "ping", "Write a poem about the sea.",
)

# --- coding agents ----------------------------------------------------------------------------

#: later turns of an agent loop: the tool output or the user's nudge, before the pasted detail
AGENT_TURN_HEADS: tuple[str, ...] = (
    "Tool result (bash): exit code 1\n", "Tool result (bash): exit code 0\n",
    "Tool result (read_file):\n", "Tool result (grep): 14 matches\n", "Tool result (run_tests):\n",
    "Tool result (edit_file): applied 1 edit\n", "Tool result (list_dir):\n",
    "Tool result (web_fetch):\n", "The tests still fail:\n", "Here is the stack trace:\n",
    "Output of `pytest -q`:\n", "Output of `npm test`:\n", "Output of `cargo build`:\n",
    "Output of `go vet ./...`:\n", "Linter output:\n", "Type checker output:\n",
    "User: that broke the build, see below\n", "User: looks good, now also handle this case\n",
    "User: please continue\n", "User: revert that and try a different approach\n",
    "Diff applied. Current file:\n", "Command timed out after 120s. Partial output:\n",
)

#: lines of code-ish text the agent loop pastes back (combined two at a time)
AGENT_DETAIL_LINES: tuple[str, ...] = (
    "FAILED tests/test_api.py::test_pagination - AssertionError: assert 20 == 25",
    "TypeError: Cannot read properties of undefined (reading 'map')",
    "error[E0502]: cannot borrow `self.items` as mutable because it is also borrowed as immutable",
    "ModuleNotFoundError: No module named 'pydantic_settings'",
    "src/server/routes.ts:41:17 - error TS2345: Argument of type 'string' is not assignable",
    "3 failed, 118 passed, 2 skipped in 7.42s", "Build succeeded with 2 warnings.",
    "KeyError: 'user_id'", "panic: runtime error: index out of range [3] with length 3",
    "def parse_config(path: str) -> dict:", "    return yaml.safe_load(handle)",
    "export async function fetchOrders(customerId: string) {", "  const rows = await db.query(sql, [id]);",
    "SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id",
    "warning: unused variable: `retries`", "E   ValueError: invalid literal for int() with base 10: ''",
    "Traceback (most recent call last):", "  File \"app/models.py\", line 88, in save",
    "npm ERR! code ERESOLVE", "WARN  deprecated inflight@1.0.6", "Segmentation fault (core dumped)",
    "tests/unit/cache_test.go:57: expected 3 entries, got 2", "java.lang.NullPointerException at OrderService.java:112",
    "    at processTicksAndRejections (node:internal/process/task_queues:95:5)", "+    if not items:",
    "-    for i in range(len(items)):", "@@ -12,7 +12,9 @@ class Scheduler:",
    "Compiling distill v0.3.1 (/home/dev/projects/distill)", "docker: Error response from daemon: port is already allocated.",
    "CREATE INDEX idx_orders_created ON orders(created_at);", "fatal: not a git repository",
    "Migrations applied: 0042_add_status_column", "Coverage: 81%", "lint: 7 problems (2 errors, 5 warnings)",
    "mypy: error: Incompatible return value type (got \"None\", expected \"str\")",
    "assert response.status_code == 200", "const [state, setState] = useState<Filter>(initial);",
    "func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {",
    "Listening on http://127.0.0.1:8000", "Killed (out of memory)",
)

# --- evaluation harnesses (researchers running public benchmarks) -----------------------------

HARNESS_HEADS: tuple[str, ...] = (
    "", "Question: ", "Complete the following Python function.\n\n",
    "Solve the following math problem. Put the final answer after '####'.\n\n",
    "You are given a programming problem. Write a correct and efficient solution.\n\n",
    "Q: ", "Problem:\n", "### Instruction:\nComplete the function below.\n\n### Input:\n",
    "Answer the following question. Think step by step, then give the final numeric answer.\n\n",
)
HARNESS_TAILS: tuple[str, ...] = (
    "", "\nAnswer:", "\nA: Let's think step by step.", "\n\nLet's think step by step.",
    "\n### Response:", "\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "\nOnly output the code, no explanation.",
)

# --- enterprise batch jobs --------------------------------------------------------------------

BATCH_TEMPLATES: tuple[str, ...] = (
    "Classify the sentiment of the following customer review as positive, negative or neutral. Reply with one word.\n\nReview: ",
    "Extract the invoice number, date, total amount and vendor name from the text below. Return JSON.\n\nText: ",
    "Summarize the following support ticket in two sentences for the on-call engineer.\n\nTicket: ",
    "Translate the following product description into German, French and Japanese. Return JSON keyed by language code.\n\n",
    "Assign the most specific category from our taxonomy to this listing. Output only the category path.\n\nListing: ",
    "Rewrite the following text so it complies with our style guide: plain language, active voice, under 80 words.\n\n",
    "Does the following message contain personal data (names, emails, phone numbers)? Answer yes or no, then list them.\n\n",
    "Generate three search keywords for the following article. Comma separated.\n\nArticle: ",
    "You will read a call transcript. List the action items with owners.\n\nTranscript: ",
    "Score the relevance of this document to the query on a 1-5 scale. Output only the number.\n\nDocument: ",
)

# --- distillation scaffolds -------------------------------------------------------------------

#: capability -> scaffold heads shared across a campaign (the "shared scaffolding" tell)
CAPABILITY_HEADS: dict[str, tuple[str, ...]] = {
    "software_engineering": (
        "You are an expert software engineer. Solve the following task completely.\n\n",
        "Task:\n", "### Task\n", "Implement the following. Provide production-quality code.\n\n",
        "Write a complete, well-tested solution for the problem below.\n\n",
        "Act as a senior engineer doing a code review and then implement the fix.\n\n",
        "Problem statement:\n", "Below is a programming task. Solve it.\n\n",
    ),
    "agentic_tool_use": (
        "You are an autonomous agent with access to the tools described below. Decide which tools to call and in what order.\n\n",
        "Plan and execute the following task using the available tools.\n\n",
        "### Agent task\n", "You can call tools. For the request below, produce the full sequence of tool calls and your reasoning.\n\n",
        "Environment: tools enabled.\n", "Operate as a tool-using assistant.\n\n",
    ),
    "reasoning": (
        "Solve the following problem.\n\n", "Question:\n", "### Problem\n",
        "Carefully solve this problem, verifying each step.\n\n", "Work out the answer to the following.\n\n",
    ),
    "data_analysis": (
        "You are a data scientist. Analyse the following and write the code to do it.\n\n",
        "Data analysis task:\n", "Using pandas, solve the following.\n\n",
    ),
    "roleplay": (
        "Stay fully in character for the following scenario.\n\n", "Roleplay task:\n",
        "Respond as the character described below, in depth.\n\n",
    ),
    "grading": (
        "You are a strict grader. Evaluate the following question and reference answer against a detailed rubric.\n\n",
        "Grade the following. First write the rubric, then score each criterion.\n\n",
        "Act as a reward model. Rate the quality of a response to this prompt on a 1-10 scale and justify every point.\n\n",
    ),
}

#: capability -> constraints appended after the seed task
CAPABILITY_CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "software_engineering": (
        "", "\n\nUse Python 3.12.", "\n\nWrite it in TypeScript.", "\n\nUse Rust.", "\n\nUse Go.",
        "\n\nUse Java 21.", "\n\nUse C++20.", "\n\nInclude unit tests.", "\n\nHandle all edge cases.",
        "\n\nOptimise for time complexity and state it.", "\n\nAdd type hints and docstrings.",
        "\n\nMake it thread-safe.", "\n\nExplain the design trade-offs.", "\n\nRefactor for readability afterwards.",
        "\n\nAlso write a short README.", "\n\nInclude error handling and logging.",
    ),
    "agentic_tool_use": (
        "", "\n\nOutput every tool call as JSON.", "\n\nIf a tool fails, recover and retry.",
        "\n\nMinimise the number of tool calls.", "\n\nExplain why each tool is needed.",
        "\n\nAfter the calls, summarise the final answer for the user.",
        "\n\nAssume the first call returns an error and show how you recover.",
        "\n\nWrite the plan first, then the calls, then the answer.",
    ),
    "reasoning": (
        "", "\n\nGive the final answer as a number.", "\n\nVerify the answer by a second method.",
        "\n\nList any assumptions.", "\n\nExplain where a student might go wrong.",
        "\n\nThen create a harder variant of the problem and solve it too.",
    ),
    "data_analysis": (
        "", "\n\nUse pandas and matplotlib.", "\n\nUse SQL.", "\n\nInclude summary statistics.",
        "\n\nExplain the statistical assumptions.",
    ),
    "roleplay": ("", "\n\nWrite at least 600 words.", "\n\nInclude the character's inner monologue."),
    "grading": (
        "", "\n\nReturn the scores as JSON.", "\n\nExplain how the answer could reach a perfect score.",
        "\n\nThen write a model answer that would score 10/10.",
    ),
}

#: chain-of-thought elicitation: asks the model to write out its full reasoning
COT_ELICITATION: tuple[str, ...] = (
    "\n\nThink step by step and show your complete reasoning before the final answer.",
    "\n\nBefore answering, write out your full chain of thought in detail inside <thinking> tags.",
    "\n\nExplain your reasoning process exhaustively, including the alternatives you rejected.",
    "\n\nShow every intermediate step. Do not skip any reasoning.",
    "\n\nFirst reason through the problem at length, then answer. The reasoning matters more than the answer.",
    "\n\nWalk through your internal reasoning step by step, as if teaching it.",
    "\n\nOutput your detailed thought process first, then a line 'FINAL:', then the answer.",
    "\n\nReason carefully and verbosely; include self-checks after each step.",
)

#: generic multi-turn follow-ups a harvesting script sends on the same conversation
ATTACK_FOLLOW_UPS: tuple[str, ...] = (
    "Explain your reasoning in more detail.", "Now give an alternative solution and compare both.",
    "Check your answer for mistakes and fix them.", "Continue.", "Now write tests for it.",
    "Explain each step as if to a beginner.", "What would an expert do differently?",
    "Go deeper on the hardest step.", "Now optimise it and explain the trade-offs.",
    "List the edge cases you considered and any you missed.", "Rewrite the solution more idiomatically.",
    "Now solve a harder variant of the same task.", "Critique your own answer, then improve it.",
    "Show the intermediate results of each step.", "Summarise the key insight in two sentences.",
    "Translate the solution into another language of your choice.", "Add error handling.",
    "Why is this approach correct? Prove it.", "What are the failure modes in production?",
    "Now do the same with the tools unavailable.",
)

#: axes of account-specific rewrites used in "paraphrase" mode (their product bounds the accounts)
PARAPHRASE_AXES: tuple[tuple[str, ...], ...] = (
    ("", "Hi! ", "Hello, ", "Hey there. ", "Good day. ", "Greetings. ", "Quick one: ", "Okay, ",
     "Alright, ", "So, ", "Hmm, ", "Please, "),
    ("please solve", "work through", "tackle", "handle", "address", "take on", "complete",
     "figure out", "resolve", "help me with"),
    ("the task below", "the following problem", "this request", "the problem that follows",
     "this one", "the item below", "what follows", "the next task"),
    ("as an experienced engineer", "as a senior developer", "as an expert programmer",
     "like a seasoned software architect", "as a careful code reviewer", "as a patient teacher",
     "like a staff engineer", "as a domain expert", "as a meticulous analyst",
     "as a problem-solving specialist"),
    ("Reason step by step.", "Think it through carefully, one step at a time.",
     "Lay out your full reasoning before answering.", "Walk me through every step of your thinking.",
     "Show all intermediate reasoning.", "Explain each step of your thought process.",
     "Think aloud, in detail, before the final answer.", "Detail your chain of reasoning first.",
     "Break the problem down and reason through each part.", "Make your reasoning explicit at every step.",
     "Write out your complete thought process.", "Go step by step and justify each step."),
    ("\n\n", "\n", " ", "\n---\n", ":\n", " -- ", "\n\n###\n", "\n>>> "),
)

# --- system prompts ---------------------------------------------------------------------------

SYSTEM_PROMPTS: dict[str, str] = {
    "helpful": "You are a helpful assistant.",
    "helpful_long": (
        "You are a helpful, harmless and honest assistant. Answer the user's questions accurately "
        "and concisely. If you are unsure, say so. Use Markdown for formatting when helpful."
    ),
    "tutor": (
        "You are a patient tutor for high-school and university students. Guide the student towards "
        "the answer with hints and questions instead of giving the full solution immediately."
    ),
    "support_bot": (
        "You are the customer support assistant of an online store. Be polite and brief. Only answer "
        "questions about orders, shipping, returns and products. Escalate anything else to a human."
    ),
    "writing_app": (
        "You are a writing assistant embedded in a note-taking app. Improve the user's text while "
        "keeping their voice. Never add facts the user did not provide."
    ),
    "translator": "You translate text faithfully. Output only the translation.",
    "rag": (
        "Answer the question using only the context documents provided by the user. If the answer is "
        "not in the context, reply 'I don't know'. Cite the document ids you used in square brackets."
    ),
    "json_extractor": "You extract structured data. Always reply with a single valid JSON object and nothing else.",
    "coding_agent_terminal": (
        "You are an interactive command-line coding agent that helps users with software engineering "
        "tasks. You can read and edit files, run shell commands and search the codebase using the tools "
        "provided. Keep responses short; the user sees them in a terminal. Before editing a file, read it. "
        "Never commit changes unless the user asks. When you run a non-trivial command, explain what it "
        "does. Follow the existing code style of the project, prefer editing existing files to creating "
        "new ones, and run the project's tests and linters after making changes. If tests fail, "
        "investigate and fix the cause rather than weakening the tests. Use the todo tool to plan "
        "multi-step work and mark items complete as you go. Refuse to write malicious code."
    ),
    "coding_agent_ide": (
        "You are a highly skilled software engineer working inside the user's IDE. You have tools to "
        "list files, read files, search, apply diffs and execute commands in a sandboxed terminal. Work "
        "iteratively: analyse the task, set goals, use one tool at a time, and wait for the result of each "
        "tool call before proceeding. Do not assume the outcome of a tool call. When the task is done, "
        "present the result with attempt_completion. Respect the workspace's .gitignore and never print "
        "secrets. The current working directory is the project root. The user's operating system and "
        "shell are given in the environment details appended to each message."
    ),
    "coding_agent_pair": (
        "Act as an expert software developer pair-programming with the user. Always use best practices "
        "when coding and respect existing conventions, libraries and structure. Take requests for changes "
        "to the supplied code. If the request is ambiguous, ask questions. Once you understand the request "
        "you MUST describe each change with a SEARCH/REPLACE block per file, then suggest the shell commands "
        "the user should run to test the change."
    ),
    "scaffold_expert_cot": (
        "You are a world-class expert. For every request, first think step by step inside <reasoning> "
        "tags, covering every consideration and alternative, then give a complete, production-quality "
        "final answer. Never shorten your reasoning."
    ),
    "scaffold_teacher": (
        "You are an expert teacher producing training material. Always explain your full reasoning "
        "process in detail, step by step, before presenting the final solution. Be exhaustive."
    ),
    "scaffold_agent": (
        "You are an advanced autonomous agent. Think carefully about which tools to use, explain your "
        "plan, call tools as needed, reflect on each result and narrate your reasoning throughout."
    ),
    "scaffold_grader": (
        "You are an impartial expert evaluator. Always produce a detailed rubric, score every criterion "
        "with justification, and explain how the response could be improved."
    ),
}

#: enterprise system prompt, filled with the organisation's name
ENTERPRISE_SYSTEM_TEMPLATE = (
    "You are the internal document-processing assistant of {company}. Follow the task instructions "
    "exactly, output only what is requested, and never include personal data in free text."
)

# --- task variation (context and requirements a harvesting script adds to a seed task) -------

TASK_DOMAINS: tuple[str, ...] = tuple(
    f"\n\nContext: this is part of {d}." for d in (
        "a banking backend", "an e-commerce checkout service", "a hospital scheduling system",
        "a logistics routing platform", "a mobile game", "a social media feed ranker",
        "an IoT sensor gateway", "a video streaming service", "a ride-sharing app", "a CRM integration",
        "a compiler toolchain", "a trading engine", "an insurance claims pipeline", "a search engine indexer",
        "a recommendation service", "a chat application", "a fleet telemetry system", "an airline booking site",
        "a tax calculation library", "a legal document manager", "a learning management system",
        "a warehouse robot controller", "a payroll system", "a smart-home hub", "a genomics pipeline",
        "a climate data portal", "a news aggregator", "a ticketing system", "a university registrar",
        "a restaurant ordering app", "a fraud detection service", "a DevOps dashboard",
        "a cybersecurity log analyser", "a content moderation queue", "a music tagging service",
        "a real-estate listing site", "a fitness tracker", "a customer support bot", "a map tile server",
        "an energy grid monitor", "a translation memory tool", "a photo editing app", "an auction platform",
        "a crowdfunding site", "a carbon accounting tool", "a clinical trial tracker", "a library catalogue",
        "a parking management system", "a sports statistics site", "a satellite imagery pipeline",
    ))

TASK_REQUIREMENTS: tuple[str, ...] = (
    "\nRequirement: it must handle 10,000 requests per second.", "\nRequirement: keep memory under 100 MB.",
    "\nRequirement: no third-party dependencies.", "\nRequirement: it must be idempotent.",
    "\nRequirement: support Unicode input.", "\nRequirement: make it configurable via environment variables.",
    "\nRequirement: log every decision at debug level.", "\nRequirement: it must run on Windows and Linux.",
    "\nRequirement: inputs may be malformed; validate them.", "\nRequirement: results must be deterministic.",
    "\nRequirement: expose it as a REST endpoint.", "\nRequirement: it must be safe under concurrent use.",
    "\nRequirement: add metrics for latency.", "\nRequirement: document the public API.",
    "\nRequirement: stream results instead of buffering.", "\nRequirement: respect a 2-second timeout.",
    "\nRequirement: retries with exponential backoff.", "\nRequirement: backwards compatible with v1 clients.",
    "\nRequirement: GDPR-compliant handling of personal data.", "\nRequirement: explain it to a junior colleague.",
    "\nRequirement: the answer must cite the relevant theorem or rule.", "\nRequirement: double-check arithmetic.",
    "\nRequirement: consider at least two alternative approaches.", "\nRequirement: give the worst-case complexity.",
    "\nRequirement: assume the input is very large.", "\nRequirement: keep the public interface unchanged.",
    "\nRequirement: include a short example run.", "\nRequirement: point out any ambiguity in the task.",
    "\nRequirement: fail loudly on invalid state.", "\nRequirement: write it as a reusable module.",
)

# --- campaign-specific scaffold system prompts (one sentence from each axis) -----------------

SCAFFOLD_AXES: tuple[tuple[str, ...], ...] = (
    ("You are a world-class expert.", "You are an expert assistant producing training-quality answers.",
     "You are a senior specialist and an exceptional teacher.", "You are a meticulous domain expert.",
     "You are an advanced autonomous agent.", "You are an impartial expert evaluator.",
     "You are the most capable assistant available.", "You are a principal engineer and researcher."),
    ("For every request, first think step by step inside <reasoning> tags, covering every consideration and alternative.",
     "Always explain your full reasoning process in detail, step by step, before the final solution.",
     "Narrate your reasoning throughout, reflecting on each intermediate result.",
     "Work through the problem exhaustively and verify each step.",
     "Before answering, lay out a plan, then execute it step by step, explaining each decision.",
     "Produce a detailed rubric-style analysis before concluding.",
     "Think carefully and at length; show all of your work."),
    ("Then give a complete, production-quality final answer.", "Never shorten your reasoning.",
     "End with a clearly marked final answer.", "Be exhaustive; length is not a concern.",
     "Use Markdown headings for each step.", "Always include code where it helps.",
     "Finish with a one-paragraph summary."),
)

# --- long-form content generation (a legitimate heavy, templated, long-output customer) -------

LONGFORM_TEMPLATES: tuple[str, ...] = (
    "Write a comprehensive, well-structured article of about 2,000 words on the following topic. Use headings.\n\nTopic: ",
    "Create an in-depth guide for our blog. Include an introduction, five sections and a conclusion.\n\nSubject: ",
    "Draft a detailed product documentation page based on the following request.\n\n",
    "Write a long-form newsletter issue that explores this question from several angles:\n\n",
    "Produce a complete lesson plan with explanations, examples and exercises for:\n\n",
    "Write a thorough FAQ (at least 15 questions with full answers) about:\n\n",
    "Expand the following into a detailed white paper section with supporting arguments:\n\n",
    "Write an SEO-optimised pillar page (1,500+ words) answering:\n\n",
    "Generate a detailed case study, with background, approach, results and lessons learned, about:\n\n",
    "Write a chapter for an online course that teaches the following, step by step:\n\n",
)
