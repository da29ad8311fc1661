"""A labelled set for `without_forgotten`'s test (memory.forgotten): a
deleted fact and a summary sentence, labelled True when the sentence says that fact in other
words, False when it shares the fact's words but says something else (another person's fact,
a relative's, another object, another attribute of the same thing). Written 2026-12-05 before
any rule was tuned on it; the user is "alice". Facts of even index are the tuning half, of odd
index the held-out half (whole facts, so no fact is seen in both halves).

    .venv/bin/python bench/bench_forgetting_rewordings.py
"""

from __future__ import annotations

USER = "alice"

# A summary's text: one sentence, or sentences and clauses in a row (joined with a space), the
# last one labelled and the ones before it to be kept (they say something else).
Text = str | tuple[str, ...]
# (deleted fact, [rewordings], [unrelated sentences that share its words])
FACTS: list[tuple[str, list[Text], list[Text]]] = [
    (
        "User is allergic to peanuts.",
        [
            "They mentioned a peanut allergy.",
            "Alice has a peanut allergy.",
            ("User likes tea;", "she is allergic to peanuts."),
        ],
        [
            "Bob is allergic to peanuts.",
            "They bought peanuts for the party.",
            ("Her sister Mia visited.", "She is allergic to peanuts."),
            "The user's mother has a peanut allergy.",
        ],
    ),
    (
        "User has a dog named Rex.",
        ["Alice's dog is called Rex.", "The user owns a dog, Rex."],
        ["Her neighbour's dog Rex barked all night.", "Alice wants to adopt a dog."],
    ),
    (
        "User lives in Berlin.",
        ["Alice is based in Berlin.", "The user's home is in Berlin."],
        ["Alice visited Berlin for a conference.", "Her brother lives in Berlin."],
    ),
    (
        "User works as a nurse.",
        ["Alice is a nurse by profession.", "She is employed as a nurse."],
        ["Alice asked a nurse about her medication.", "Her mother works as a nurse."],
    ),
    (
        "User is vegetarian.",
        ["Alice does not eat meat.", "The user follows a vegetarian diet."],
        ["Alice asked for vegetarian recipes for her guests.", "Her partner is vegetarian."],
    ),
    (
        "User's sister is called Anna.",
        ["Alice has a sister named Anna.", "Anna is the user's sister."],
        ["Alice's colleague Anna is leaving the company.", "Alice's sister lives in Rome."],
    ),
    (
        "User has type 1 diabetes.",
        ["Alice is a type 1 diabetic.", "The user was diagnosed with type 1 diabetes."],
        ["Alice's father has type 2 diabetes.", "Alice read an article about diabetes."],
    ),
    (
        "User is pregnant.",
        ["Alice is expecting a baby.", "The user mentioned her pregnancy."],
        ["Alice's friend is pregnant.", "Alice asked about pregnancy leave rules at work."],
    ),
    (
        "User plays the violin.",
        ["Alice is a violinist.", "The user plays violin in her free time."],
        ["Alice went to a violin concert.", "Her son plays the violin."],
    ),
    (
        "User is afraid of flying.",
        ["Alice has a fear of flying.", "Flying makes the user anxious."],
        ["Alice is flying to Madrid next week.", "Alice is afraid of spiders."],
    ),
    (
        "User moved to Oslo in 2024.",
        ["Alice relocated to Oslo in 2024.", "The user has lived in Oslo since 2024."],
        ["Alice plans to visit Oslo in 2025.", "Alice's cousin moved to Oslo."],
    ),
    (
        "User is married to Tom.",
        ["Alice's husband is Tom.", "Tom is the user's husband."],
        ["Alice's coworker Tom got married.", "Alice is friends with Tom."],
    ),
    (
        "User takes sertraline for depression.",
        [
            "Alice is on sertraline to treat her depression.",
            "The user's antidepressant is sertraline.",
        ],
        [
            "Alice asked whether sertraline interacts with alcohol for a friend.",
            "Her brother has depression.",
        ],
    ),
    (
        "User is learning Japanese.",
        ["Alice is studying Japanese.", "The user has been taking Japanese lessons."],
        ["Alice likes Japanese food.", "Her daughter is learning Japanese."],
    ),
    (
        "User has two children.",
        ["Alice is a mother of two.", "The user has a son and a daughter."],
        ["Alice's sister has two children.", "Alice teaches children at a primary school."],
    ),
    (
        "User is lactose intolerant.",
        [
            "Dairy upsets Alice's stomach; she is lactose intolerant.",
            "The user cannot digest lactose.",
        ],
        ["Alice bought lactose-free milk for her roommate.", "Her son is lactose intolerant."],
    ),
    (
        "User runs marathons.",
        ["Alice is a marathon runner.", "The user competes in marathons."],
        ["Alice watched the Berlin marathon on TV.", "Alice's husband runs marathons."],
    ),
    (
        "User was born in Lyon.",
        ["Alice is originally from Lyon.", "Lyon is the user's birthplace."],
        ["Alice spent a weekend in Lyon.", "Alice's grandmother was born in Lyon."],
    ),
    (
        "User owes the bank 20,000 euros.",
        ["Alice has a 20,000 euro debt to her bank.", "The user's bank loan is 20,000 euros."],
        ["Alice opened an account at a new bank.", "Alice lent her brother 200 euros."],
    ),
    (
        "User is a Muslim.",
        ["Alice practises Islam.", "The user is of the Muslim faith."],
        ["Alice's neighbours are Muslim.", "Alice read a book about the history of Islam."],
    ),
    (
        "User drives a Tesla.",
        ["Alice's car is a Tesla.", "The user owns a Tesla."],
        ["Alice test-drove a Tesla but bought a Volvo.", "Her boss drives a Tesla."],
    ),
    (
        "User is gay.",
        ["Alice is a lesbian.", "The user is attracted to women."],
        ["Alice went to a gay bar with a friend.", "Alice's brother is gay."],
    ),
    # Added 2026-12-06 before the rules were changed for them: a name shared by another
    # relation, a pronoun naming the previous sentence's person, a fact after a semicolon.
    (
        "User is dating Sam.",
        ["Sam is Alice's boyfriend.", "Alice is in a relationship with Sam."],
        ["Alice is friends with Sam.", "Sam is Alice's landlord."],
    ),
    (
        "User's best friend is Lena.",
        ["Lena is Alice's closest friend.", "Alice and Lena have been best friends since school."],
        ["Alice's manager is Lena.", "Alice is married to Lena."],
    ),
    (
        "User is allergic to shellfish.",
        [
            ("Alice loves the coast;", "she has a shellfish allergy."),
            "Shellfish gives the user a severe allergic reaction.",
        ],
        [
            ("Her brother Jon visited.", "He is allergic to shellfish."),
            ("Alice's cousin Eva came over;", "she has a shellfish allergy."),
        ],
    ),
    (
        "User has asthma.",
        [
            ("Alice started running again;", "she is asthmatic."),
            "The user relies on an inhaler for her asthma.",
        ],
        [
            ("Her sister Mia visited.", "She has asthma."),
            ("Alice's colleague Ben called;", "he has asthma."),
        ],
    ),
]
