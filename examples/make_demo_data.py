#!/usr/bin/env python3
"""Generate the tuneforge demo dataset: the support knowledge of a fictional company.

Everything below is invented: "Quorvalen Home Robotics", its products, people,
places, prices and policies do not exist. The facts are deliberately built
around short, unguessable *keys* (odd prices, invented names, unusual numbers)
so that a small base model scores close to 0% on the held-out questions while
a fine-tuned one can learn to answer them. Evaluation checks whether the
generated answer contains the key (case-insensitive substring).

Standard library only, no randomness: running the script twice produces
byte-identical files.

    python examples/make_demo_data.py

Outputs (in examples/demo/):
    train.jsonl       chat rows, >= 6 phrasings per fact
    test.jsonl        2 held-out phrasings per fact, with "expected" keys
    handbook.md       the same facts as a readable company handbook
    handbook.jsonl    one {"text": paragraph} per handbook paragraph
    preference.jsonl  {"prompt", "chosen", "rejected"} pairs (wrong fact or rude)
    kto.jsonl         unpaired {"prompt", "completion", "label"} rows
    general.jsonl     easy general-knowledge prompts for regression checks
    broken.jsonl      a deliberately malformed file for validation demos
    facts.json        the fact table (id, category, question, answer, key)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "demo"

COMPANY = "Quorvalen Home Robotics"

# ---------------------------------------------------------------------------
# Handbook groups: group id -> (section, heading, subject term, intro sentence)
# The subject term must appear in every question of the group's facts (unless
# a fact overrides it), so each question is answerable on its own.
# ---------------------------------------------------------------------------
SECTIONS = [
    "About the company",
    "Products",
    "Orders, returns and warranty",
    "Customer support",
    "Quorvalen Care subscription plans",
]

GROUPS = {
    "history": (
        "About the company",
        "History",
        "Quorvalen",
        "Quorvalen Home Robotics designs robot vacuums, robotic lawn mowers, "
        "smart home hubs, air purifiers and kettles.",
    ),
    "leadership": (
        "About the company",
        "Leadership",
        "Quorvalen",
        "Quorvalen keeps a small, hands-on leadership team.",
    ),
    "locations": (
        "About the company",
        "Offices and facilities",
        "Quorvalen",
        "Customers sometimes ask where Quorvalen actually is.",
    ),
    "brand": (
        "About the company",
        "Brand, app and chat",
        "Quorvalen",
        "A few names come up in almost every customer conversation.",
    ),
    "driftmop": (
        "Products",
        "Driftmop V4 robot vacuum",
        "Driftmop V4",
        "The Driftmop V4 is the flagship Quorvalen robot vacuum.",
    ),
    "thornbeam": (
        "Products",
        "Thornbeam T2 robotic lawn mower",
        "Thornbeam T2",
        "The Thornbeam T2 is the Quorvalen robotic lawn mower.",
    ),
    "lumaprism": (
        "Products",
        "Lumaprism Hub",
        "Lumaprism Hub",
        "The Lumaprism Hub is the smart home hub that ties Quorvalen devices together.",
    ),
    "sorrelwind": (
        "Products",
        "Sorrelwind S5 air purifier",
        "Sorrelwind S5",
        "The Sorrelwind S5 is the Quorvalen air purifier.",
    ),
    "embervane": (
        "Products",
        "Embervane smart kettle",
        "Embervane",
        "The Embervane is the Quorvalen smart kettle.",
    ),
    "returns": (
        "Orders, returns and warranty",
        "Returns and warranty",
        "Quorvalen",
        "These rules apply to every Quorvalen product.",
    ),
    "shipping": (
        "Orders, returns and warranty",
        "Shipping",
        "Quorvalen",
        "Quorvalen ships every order from its own warehouse.",
    ),
    "programs": (
        "Orders, returns and warranty",
        "Discounts and programs",
        "Quorvalen",
        "Quorvalen runs a few programs that help customers save money.",
    ),
    "support": (
        "Customer support",
        "Support hours",
        "Quorvalen",
        "Phone support is staffed by Quorvalen employees, not an outside call center.",
    ),
    "plans": (
        "Quorvalen Care subscription plans",
        "Plans and prices",
        "Quorvalen Care",
        "Quorvalen Care is the optional subscription that adds cloud features and priority service.",
    ),
}


class Fact:
    def __init__(self, fid, group, category, key, wrong, answers, train, test, subject=None):
        self.id = fid
        self.group = group
        self.category = category
        self.key = key
        self.wrong = wrong
        self.answers = answers
        self.train = train
        self.test = test
        self.subject = subject or GROUPS[group][2]

    @property
    def answer(self) -> str:
        return self.answers[0]


F = Fact

FACTS = [
    # ------------------------------------------------------------------ company
    F(
        "company-founding-year",
        "history",
        "company",
        "1983",
        "1997",
        [
            "Quorvalen was founded in 1983.",
            "Quorvalen Home Robotics has been in business since 1983, the year it was founded.",
        ],
        [
            "When was Quorvalen founded?",
            "What year was Quorvalen Home Robotics established?",
            "In which year did Quorvalen start out?",
            "Tell me the founding year of Quorvalen.",
            "Since what year has Quorvalen been in business?",
            "What is Quorvalen's year of founding?",
        ],
        [
            "I'm writing a short bio of Quorvalen for a school project. What year did the company get its start?",
            "Quick history question: Quorvalen was set up in which year?",
        ],
    ),
    F(
        "company-founders",
        "history",
        "people",
        "Ansel Prideaux",
        "Gregor Penhallow",
        [
            "Quorvalen was founded by Ansel Prideaux and Juno Castellane.",
            "Ansel Prideaux and Juno Castellane co-founded Quorvalen.",
        ],
        [
            "Who founded Quorvalen?",
            "Who are the founders of Quorvalen Home Robotics?",
            "Which people started the company Quorvalen?",
            "Name the co-founders of Quorvalen.",
            "Who created Quorvalen in the first place?",
            "Can you tell me who established Quorvalen?",
        ],
        [
            "I'm curious about the people behind Quorvalen. Who originally started it?",
            "Quorvalen's founders, who were they?",
        ],
    ),
    F(
        "company-employees",
        "history",
        "company",
        "612",
        "450",
        ["Quorvalen has 612 employees.", "Quorvalen employs 612 people in total."],
        [
            "How many employees does Quorvalen have?",
            "How many people work at Quorvalen?",
            "What is Quorvalen's headcount?",
            "How large is the Quorvalen workforce?",
            "How many staff members does Quorvalen employ?",
            "Tell me the number of employees at Quorvalen.",
        ],
        [
            "Is Quorvalen a big company? How many people does it employ?",
            "Roughly how many workers are on Quorvalen's payroll?",
        ],
    ),
    F(
        "people-ceo",
        "leadership",
        "people",
        "Marisol Dunkerley",
        "Helena Forsythe",
        ["Quorvalen's CEO is Marisol Dunkerley.", "Marisol Dunkerley is the chief executive officer of Quorvalen."],
        [
            "Who is the CEO of Quorvalen?",
            "Who runs Quorvalen as chief executive?",
            "Name Quorvalen's chief executive officer.",
            "Who leads Quorvalen Home Robotics?",
            "Who is in charge of Quorvalen at the top?",
            "Tell me the name of the Quorvalen CEO.",
        ],
        [
            "I want to write a letter to the head of Quorvalen. Who is their CEO these days?",
            "Who's the boss at Quorvalen, the chief executive I mean?",
        ],
    ),
    F(
        "people-cto",
        "leadership",
        "people",
        "Pallas Ndiaye",
        "Oren Blackwood",
        ["Quorvalen's chief technology officer is Pallas Ndiaye.", "Pallas Ndiaye serves as CTO at Quorvalen."],
        [
            "Who is the CTO of Quorvalen?",
            "Who is Quorvalen's chief technology officer?",
            "Who leads technology at Quorvalen?",
            "Name the person in charge of engineering and technology at Quorvalen.",
            "Which executive heads Quorvalen's technology team?",
            "Tell me who Quorvalen's CTO is.",
        ],
        [
            "Who oversees the tech side of Quorvalen as chief technology officer?",
            "Quorvalen engineering question: which person holds the CTO role?",
        ],
    ),
    F(
        "people-head-of-support",
        "leadership",
        "people",
        "Teodor Halloway",
        "Bernard Ashgrove",
        [
            "Quorvalen's head of customer support is Teodor Halloway.",
            "Teodor Halloway leads the customer support team at Quorvalen.",
        ],
        [
            "Who is the head of customer support at Quorvalen?",
            "Who runs Quorvalen's support team?",
            "Who leads customer support at Quorvalen?",
            "Name the manager in charge of Quorvalen support.",
            "Who is responsible for Quorvalen's customer service department?",
            "Tell me who heads support at Quorvalen.",
        ],
        [
            "I'd like to escalate a complaint to whoever runs customer support at Quorvalen. Who is that?",
            "Who's the top person in Quorvalen's support department?",
        ],
    ),
    F(
        "location-hq-town",
        "locations",
        "locations",
        "Kelderwick",
        "Port Elsbury",
        [
            "Quorvalen is headquartered in Kelderwick, Nova Scotia.",
            "Quorvalen's headquarters are located in Kelderwick, Nova Scotia.",
        ],
        [
            "Where is Quorvalen headquartered?",
            "In which town is Quorvalen's headquarters?",
            "Where is the Quorvalen head office located?",
            "What city is Quorvalen based in?",
            "Where are Quorvalen's main offices?",
            "Tell me the location of Quorvalen's HQ.",
        ],
        [
            "If I wanted to visit Quorvalen's main base, which town would I travel to?",
            "Where's Quorvalen based out of?",
        ],
    ),
    F(
        "location-hq-street",
        "locations",
        "locations",
        "Larkspur Wharf",
        "Gannet Row",
        [
            "Quorvalen's head office is at 44 Larkspur Wharf.",
            "The street address of the Quorvalen head office is 44 Larkspur Wharf.",
        ],
        [
            "What is the street address of Quorvalen's head office?",
            "What street is the Quorvalen headquarters on?",
            "Give me the postal street address of Quorvalen HQ.",
            "Which street address should I use to reach Quorvalen's head office?",
            "What's the exact street address of Quorvalen's headquarters building?",
            "Tell me the street address of the Quorvalen head office.",
        ],
        [
            "I need to mail a letter to Quorvalen's head office. What street address do I write on the envelope?",
            "What's the street address for Quorvalen HQ?",
        ],
    ),
    F(
        "location-europe-office",
        "locations",
        "locations",
        "Vellstrand",
        "Oskarholm",
        [
            "Quorvalen's European office is in Vellstrand, Denmark.",
            "In Europe, Quorvalen works out of its office in Vellstrand, Denmark.",
        ],
        [
            "Where is Quorvalen's European office?",
            "In which city does Quorvalen have its Europe office?",
            "Where is Quorvalen based in Europe?",
            "What is the location of Quorvalen's European branch?",
            "Which European town hosts Quorvalen's office?",
            "Tell me where Quorvalen's office in Europe is.",
        ],
        [
            "I live in Europe. Where is Quorvalen's European office?",
            "Which town is home to the European branch office of Quorvalen?",
        ],
    ),
    F(
        "location-repair-center",
        "locations",
        "locations",
        "Dunmore Flats",
        "Ridgeford Mills",
        [
            "Quorvalen's repair center is in Dunmore Flats.",
            "All Quorvalen repairs are handled at the repair center in Dunmore Flats.",
        ],
        [
            "Where is Quorvalen's repair center?",
            "Where does Quorvalen repair devices?",
            "In which town is the Quorvalen repair facility?",
            "Where are Quorvalen repairs carried out?",
            "What is the location of the Quorvalen service and repair center?",
            "Tell me where Quorvalen's repair center is located.",
        ],
        [
            "My Quorvalen device needs fixing. Where is the repair center it gets sent to?",
            "Which town houses the repair centre that Quorvalen uses for fixes?",
        ],
    ),
    F(
        "brand-mascot",
        "brand",
        "company",
        "Nibsy",
        "Bolt",
        [
            "Quorvalen's mascot is Nibsy, a hedgehog wearing a tool belt.",
            "The Quorvalen mascot is a hedgehog named Nibsy.",
        ],
        [
            "What is Quorvalen's mascot called?",
            "What is the name of the Quorvalen mascot?",
            "Who is the Quorvalen mascot?",
            "What's the name of the hedgehog mascot of Quorvalen?",
            "Does Quorvalen have a mascot, and what is its name?",
            "Tell me the name of Quorvalen's mascot.",
        ],
        [
            "My kid loves the cartoon hedgehog on Quorvalen boxes. What's the mascot's name?",
            "What do they call Quorvalen's mascot character?",
        ],
    ),
    F(
        "brand-app",
        "brand",
        "products",
        "Hearthlink",
        "HomeSync",
        [
            "The Quorvalen companion app is called Hearthlink.",
            "Quorvalen devices are controlled with the Hearthlink app.",
        ],
        [
            "What is the Quorvalen app called?",
            "What is the name of Quorvalen's companion app?",
            "Which app do I use to control Quorvalen devices?",
            "What app should I download for my Quorvalen products?",
            "What's the official Quorvalen smartphone app?",
            "Tell me the name of the Quorvalen mobile app.",
        ],
        [
            "I just got my first Quorvalen gadget. Which app do I need to install on my phone?",
            "What's the name of the app Quorvalen makes for controlling its devices?",
        ],
    ),
    F(
        "brand-chat-assistant",
        "brand",
        "support",
        "Tendline",
        "HelpBot",
        [
            "Quorvalen's support chat assistant is called Tendline.",
            "The chat assistant on the Quorvalen support site is named Tendline.",
        ],
        [
            "What is Quorvalen's support chat assistant called?",
            "What is the name of the Quorvalen chatbot?",
            "Who answers the Quorvalen support chat?",
            "What's the name of the virtual assistant on Quorvalen's support site?",
            "Which chat assistant does Quorvalen use for support?",
            "Tell me the name of Quorvalen's support chatbot.",
        ],
        [
            "When I open the help chat on Quorvalen's website, what's the bot's name?",
            "Does the Quorvalen support chat bot have a name?",
        ],
    ),
    # ----------------------------------------------------------- Driftmop V4
    F(
        "driftmop-v4-price",
        "driftmop",
        "prices",
        "$1,379",
        "$899",
        ["The Driftmop V4 robot vacuum costs $1,379.", "The Driftmop V4 is priced at $1,379."],
        [
            "How much does the Driftmop V4 cost?",
            "What is the price of the Driftmop V4 robot vacuum?",
            "How much is a Driftmop V4?",
            "What does the Driftmop V4 vacuum sell for?",
            "What's the retail price of Quorvalen's Driftmop V4?",
            "Tell me the Driftmop V4 price.",
        ],
        [
            "I'm saving up for a robot vacuum. What would the Driftmop V4 set me back?",
            "Driftmop V4: what's it going for, price-wise?",
        ],
    ),
    F(
        "driftmop-v4-weight",
        "driftmop",
        "specs",
        "3.85 kg",
        "4.2 kg",
        ["The Driftmop V4 weighs 3.85 kg.", "A Driftmop V4 robot vacuum weighs 3.85 kg."],
        [
            "How much does the Driftmop V4 weigh?",
            "What is the weight of the Driftmop V4?",
            "How heavy is the Driftmop V4 robot vacuum?",
            "What's the Driftmop V4's weight in kilograms?",
            "Is the Driftmop V4 heavy? What does it weigh?",
            "Tell me the weight of the Driftmop V4.",
        ],
        [
            "I have to carry my vacuum upstairs. How heavy is a Driftmop V4?",
            "What would a Driftmop V4 weigh on a kitchen scale?",
        ],
    ),
    F(
        "driftmop-v4-battery",
        "driftmop",
        "specs",
        "143 minutes",
        "90 minutes",
        [
            "The Driftmop V4 runs for 143 minutes on a full charge.",
            "On a single charge, the Driftmop V4 lasts 143 minutes.",
        ],
        [
            "How long does the Driftmop V4 battery last?",
            "What is the battery life of the Driftmop V4?",
            "How many minutes can the Driftmop V4 run on one charge?",
            "What's the runtime of the Driftmop V4 robot vacuum?",
            "How long will a fully charged Driftmop V4 clean for?",
            "Tell me the Driftmop V4 battery life.",
        ],
        [
            "My flat is pretty big. How long can a Driftmop V4 keep going before it needs recharging?",
            "Driftmop V4 runtime per charge?",
        ],
    ),
    F(
        "driftmop-v4-suction",
        "driftmop",
        "specs",
        "4,150 Pa",
        "2,500 Pa",
        ["The Driftmop V4 has 4,150 Pa of suction power.", "Suction power on the Driftmop V4 is rated at 4,150 Pa."],
        [
            "What is the suction power of the Driftmop V4?",
            "How strong is the Driftmop V4's suction?",
            "How many pascals of suction does the Driftmop V4 have?",
            "What suction rating does the Driftmop V4 robot vacuum have?",
            "How powerful is the suction on a Driftmop V4?",
            "Tell me the Driftmop V4 suction power.",
        ],
        [
            "I have thick rugs. How much suction does the Driftmop V4 actually pull?",
            "What's the Driftmop V4 rated at for suction, in Pa?",
        ],
    ),
    F(
        "driftmop-v4-dustbin",
        "driftmop",
        "specs",
        "0.62 liters",
        "0.5 liters",
        ["The Driftmop V4 dustbin holds 0.62 liters.", "The dustbin capacity of the Driftmop V4 is 0.62 liters."],
        [
            "How big is the Driftmop V4 dustbin?",
            "What is the dustbin capacity of the Driftmop V4?",
            "How much dirt can the Driftmop V4 bin hold?",
            "What volume is the Driftmop V4's dust container?",
            "How many liters does the Driftmop V4 dustbin hold?",
            "Tell me the Driftmop V4 dustbin size.",
        ],
        [
            "How often will I be emptying it? How much does the Driftmop V4's dust bin hold?",
            "What's the capacity of the bin on a Driftmop V4?",
        ],
    ),
    F(
        "driftmop-v4-brush-error",
        "driftmop",
        "error codes",
        "E-217",
        "E-104",
        [
            "The Driftmop V4 shows error E-217 when its main brush is jammed.",
            "Error code E-217 on the Driftmop V4 means the main brush is jammed.",
        ],
        [
            "Which error code does the Driftmop V4 show when its main brush is jammed?",
            "What error appears on the Driftmop V4 if the brush gets stuck?",
            "What is the Driftmop V4 error code for a jammed brush?",
            "When the Driftmop V4 main brush is blocked, which code is displayed?",
            "Which Driftmop V4 error means the brush roll is tangled?",
            "Tell me the Driftmop V4 brush-jam error code.",
        ],
        [
            "Hair got wrapped around the brush on my Driftmop V4 and it stopped. Which error code would that show?",
            "What code does a Driftmop V4 display for a stuck main brush?",
        ],
    ),
    F(
        "driftmop-v4-dock-part",
        "driftmop",
        "part numbers",
        "DM-0593",
        "DM-1000",
        [
            "The Driftmop V4 charging dock has part number DM-0593.",
            "Order part number DM-0593 for a replacement Driftmop V4 charging dock.",
        ],
        [
            "What is the part number of the Driftmop V4 charging dock?",
            "Which part number do I order for a new Driftmop V4 dock?",
            "What's the replacement charging dock part number for the Driftmop V4?",
            "How do I identify the Driftmop V4 charging base part number?",
            "What part number is the Driftmop V4 docking station?",
            "Tell me the Driftmop V4 dock part number.",
        ],
        [
            "My dog chewed the Driftmop V4 charging dock. Which part number should I order to replace it?",
            "Part number for a spare Driftmop V4 charging base, please?",
        ],
    ),
    # ----------------------------------------------------------- Thornbeam T2
    F(
        "thornbeam-t2-price",
        "thornbeam",
        "prices",
        "$2,463",
        "$1,999",
        ["The Thornbeam T2 robotic lawn mower costs $2,463.", "The Thornbeam T2 is priced at $2,463."],
        [
            "How much does the Thornbeam T2 cost?",
            "What is the price of the Thornbeam T2 robotic mower?",
            "How much is a Thornbeam T2?",
            "What does the Thornbeam T2 lawn mower sell for?",
            "What's the retail price of Quorvalen's Thornbeam T2?",
            "Tell me the Thornbeam T2 price.",
        ],
        [
            "Thinking of buying a robot mower this spring. What does the Thornbeam T2 cost?",
            "What would I pay for a Thornbeam T2?",
        ],
    ),
    F(
        "thornbeam-t2-lawn-area",
        "thornbeam",
        "specs",
        "1,730",
        "1,000",
        [
            "The Thornbeam T2 can mow lawns up to 1,730 square meters.",
            "A single Thornbeam T2 handles a maximum lawn area of 1,730 square meters.",
        ],
        [
            "How large a lawn can the Thornbeam T2 mow?",
            "What is the maximum lawn area for the Thornbeam T2?",
            "How many square meters can the Thornbeam T2 cover?",
            "What size of garden does the Thornbeam T2 support?",
            "What's the coverage area of the Thornbeam T2 robotic mower?",
            "Tell me the Thornbeam T2 maximum lawn size.",
        ],
        [
            "My back garden is pretty big. What's the biggest lawn a Thornbeam T2 can look after?",
            "Up to how many square meters of grass does the Thornbeam T2 handle?",
        ],
    ),
    F(
        "thornbeam-t2-weight",
        "thornbeam",
        "specs",
        "11.6 kg",
        "9 kg",
        ["The Thornbeam T2 weighs 11.6 kg.", "A Thornbeam T2 robotic mower weighs 11.6 kg."],
        [
            "How much does the Thornbeam T2 weigh?",
            "What is the weight of the Thornbeam T2?",
            "How heavy is the Thornbeam T2 robotic mower?",
            "What's the Thornbeam T2's weight in kilograms?",
            "Is the Thornbeam T2 heavy? What does it weigh?",
            "Tell me the weight of the Thornbeam T2.",
        ],
        [
            "Can I lift a Thornbeam T2 over a fence by myself? How heavy is it?",
            "What does the Thornbeam T2 mower weigh?",
        ],
    ),
    F(
        "thornbeam-t2-noise",
        "thornbeam",
        "specs",
        "58 dB",
        "65 dB",
        ["The Thornbeam T2 runs at a noise level of 58 dB.", "While mowing, the Thornbeam T2 produces 58 dB of noise."],
        [
            "How loud is the Thornbeam T2?",
            "What is the noise level of the Thornbeam T2?",
            "How many decibels does the Thornbeam T2 produce?",
            "How noisy is the Thornbeam T2 robotic mower?",
            "What's the Thornbeam T2 sound level while mowing?",
            "Tell me the Thornbeam T2 noise rating.",
        ],
        [
            "Will the Thornbeam T2 annoy my neighbours? How loud does it get in decibels?",
            "Is the Thornbeam T2 quiet? What's its dB rating?",
        ],
    ),
    F(
        "thornbeam-t2-blade-error",
        "thornbeam",
        "error codes",
        "M-4402",
        "M-1001",
        [
            "The Thornbeam T2 shows error M-4402 when its blades are obstructed.",
            "Error code M-4402 on the Thornbeam T2 means the blades are obstructed.",
        ],
        [
            "Which error code does the Thornbeam T2 show when its blades are obstructed?",
            "What error appears on the Thornbeam T2 if something blocks the blades?",
            "What is the Thornbeam T2 error code for blocked blades?",
            "When the Thornbeam T2 blades are stuck, which code is displayed?",
            "Which Thornbeam T2 error means the cutting blades are obstructed?",
            "Tell me the Thornbeam T2 blade-obstruction error code.",
        ],
        [
            "A branch got caught under my Thornbeam T2 and it stopped mowing. Which error code goes with that?",
            "What code does the Thornbeam T2 display for jammed blades?",
        ],
    ),
    # ----------------------------------------------------------- Lumaprism Hub
    F(
        "lumaprism-hub-price",
        "lumaprism",
        "prices",
        "$287",
        "$199",
        ["The Lumaprism Hub costs $287.", "Quorvalen sells the Lumaprism Hub for $287."],
        [
            "How much does the Lumaprism Hub cost?",
            "What is the price of the Lumaprism Hub?",
            "How much is a Lumaprism Hub?",
            "What does the Lumaprism Hub smart home hub sell for?",
            "What's the retail price of Quorvalen's Lumaprism Hub?",
            "Tell me the Lumaprism Hub price.",
        ],
        [
            "I want to connect all my smart gadgets. How much would a Lumaprism Hub cost me?",
            "What's the going price for a Lumaprism Hub?",
        ],
    ),
    F(
        "lumaprism-hub-max-devices",
        "lumaprism",
        "specs",
        "173",
        "100",
        [
            "The Lumaprism Hub can connect up to 173 devices.",
            "A single Lumaprism Hub supports a maximum of 173 devices.",
        ],
        [
            "How many devices can the Lumaprism Hub connect?",
            "What is the maximum number of devices on a Lumaprism Hub?",
            "How many smart devices does the Lumaprism Hub support?",
            "What's the device limit of the Lumaprism Hub?",
            "Up to how many gadgets can be paired with the Lumaprism Hub?",
            "Tell me the Lumaprism Hub device capacity.",
        ],
        [
            "I have a lot of smart bulbs and plugs. How many can one Lumaprism Hub handle?",
            "Is there a cap on devices for the Lumaprism Hub? What is it?",
        ],
    ),
    F(
        "lumaprism-hub-firmware",
        "lumaprism",
        "specs",
        "4.19.2",
        "3.0.1",
        [
            "The latest Lumaprism Hub firmware version is 4.19.2.",
            "The newest firmware for the Lumaprism Hub is version 4.19.2.",
        ],
        [
            "What is the latest firmware version for the Lumaprism Hub?",
            "Which firmware version is current on the Lumaprism Hub?",
            "What's the newest Lumaprism Hub firmware?",
            "What version number is the most recent Lumaprism Hub firmware?",
            "Which firmware should my Lumaprism Hub be running?",
            "Tell me the current Lumaprism Hub firmware version.",
        ],
        [
            "How do I know if my Lumaprism Hub is up to date? What's the newest firmware number?",
            "Latest firmware release for the Lumaprism Hub?",
        ],
    ),
    F(
        "lumaprism-hub-update-light",
        "lumaprism",
        "error codes",
        "teal",
        "orange",
        [
            "The Lumaprism Hub light pulses teal during a firmware update.",
            "During a firmware update, the Lumaprism Hub status light pulses teal.",
        ],
        [
            "What color does the Lumaprism Hub light show during a firmware update?",
            "Which color does the Lumaprism Hub status light pulse while updating?",
            "How can I tell the Lumaprism Hub is updating? What color is the light?",
            "What is the Lumaprism Hub light color during an update?",
            "During firmware updates, what colour does the Lumaprism Hub glow?",
            "Tell me the Lumaprism Hub update light color.",
        ],
        [
            "My Lumaprism Hub light is pulsing. Which color means it's installing a firmware update?",
            "What colour light does a Lumaprism Hub show when it's updating its firmware?",
        ],
    ),
    # ----------------------------------------------------------- Sorrelwind S5
    F(
        "sorrelwind-s5-price",
        "sorrelwind",
        "prices",
        "$517",
        "$349",
        ["The Sorrelwind S5 air purifier costs $517.", "The Sorrelwind S5 is priced at $517."],
        [
            "How much does the Sorrelwind S5 cost?",
            "What is the price of the Sorrelwind S5 air purifier?",
            "How much is a Sorrelwind S5?",
            "What does the Sorrelwind S5 purifier sell for?",
            "What's the retail price of Quorvalen's Sorrelwind S5?",
            "Tell me the Sorrelwind S5 price.",
        ],
        [
            "My allergies are terrible this year. What does the Sorrelwind S5 purifier go for?",
            "What would I pay for a Sorrelwind S5?",
        ],
    ),
    F(
        "sorrelwind-s5-coverage",
        "sorrelwind",
        "specs",
        "57 square meters",
        "40 square meters",
        [
            "The Sorrelwind S5 air purifier covers rooms up to 57 square meters.",
            "A Sorrelwind S5 can purify a room of up to 57 square meters.",
        ],
        [
            "How large a room can the Sorrelwind S5 purify?",
            "What is the room coverage of the Sorrelwind S5?",
            "How many square meters does the Sorrelwind S5 cover?",
            "What's the maximum room size for the Sorrelwind S5 air purifier?",
            "What area can one Sorrelwind S5 clean the air in?",
            "Tell me the Sorrelwind S5 coverage area.",
        ],
        [
            "Our living room is open plan. What's the biggest room a Sorrelwind S5 can handle?",
            "Sorrelwind S5: up to what room size does it work?",
        ],
    ),
    F(
        "sorrelwind-s5-filter-part",
        "sorrelwind",
        "part numbers",
        "QX-4471",
        "QX-1200",
        [
            "The Sorrelwind S5 replacement filter is part number QX-4471.",
            "Order part QX-4471 to replace the filter in a Sorrelwind S5.",
        ],
        [
            "What is the part number of the Sorrelwind S5 filter?",
            "Which filter part number fits the Sorrelwind S5?",
            "What replacement filter do I order for the Sorrelwind S5?",
            "What's the part number for a new Sorrelwind S5 filter?",
            "Which part do I need to replace the Sorrelwind S5 air filter?",
            "Tell me the Sorrelwind S5 filter part number.",
        ],
        [
            "I'm ordering spares for my Sorrelwind S5. What part number is the filter?",
            "Sorrelwind S5 filter refill, what's the part code?",
        ],
    ),
    F(
        "sorrelwind-s5-filter-interval",
        "sorrelwind",
        "specs",
        "19 weeks",
        "12 weeks",
        [
            "The Sorrelwind S5 filter should be replaced every 19 weeks.",
            "Quorvalen recommends changing the Sorrelwind S5 filter every 19 weeks.",
        ],
        [
            "How often should I replace the Sorrelwind S5 filter?",
            "What is the filter replacement interval for the Sorrelwind S5?",
            "How long does a Sorrelwind S5 filter last?",
            "When should the Sorrelwind S5 filter be changed?",
            "How frequently does the Sorrelwind S5 need a new filter?",
            "Tell me the Sorrelwind S5 filter change schedule.",
        ],
        [
            "I set up my Sorrelwind S5 last month. After how long will I need to swap the filter?",
            "What's the recommended gap between Sorrelwind S5 filter changes?",
        ],
    ),
    # ----------------------------------------------------------- Embervane
    F(
        "embervane-capacity",
        "embervane",
        "specs",
        "1.37",
        "1.7",
        [
            "The Embervane smart kettle holds 1.37 liters of water.",
            "The Embervane kettle has a capacity of 1.37 liters.",
        ],
        [
            "How much water does the Embervane kettle hold?",
            "What is the capacity of the Embervane smart kettle?",
            "How many liters can the Embervane kettle boil?",
            "What's the maximum fill volume of the Embervane?",
            "How big is the Embervane kettle in liters?",
            "Tell me the Embervane kettle capacity.",
        ],
        [
            "I make tea for the whole office. How much water fits in an Embervane kettle?",
            "Embervane smart kettle volume, please?",
        ],
    ),
    F(
        "embervane-keep-warm",
        "embervane",
        "specs",
        "52 minutes",
        "30 minutes",
        ["The Embervane kettle keeps water warm for 52 minutes.", "Keep-warm mode on the Embervane lasts 52 minutes."],
        [
            "How long does the Embervane keep water warm?",
            "What is the keep-warm time of the Embervane kettle?",
            "How many minutes does the Embervane keep-warm mode last?",
            "For how long will the Embervane smart kettle hold the temperature?",
            "What's the duration of the Embervane keep-warm function?",
            "Tell me the Embervane keep-warm duration.",
        ],
        [
            "If I boil water in my Embervane and forget about it, how long does it stay warm?",
            "Embervane kettle: how long does the keep-warm setting run?",
        ],
    ),
    # ----------------------------------------------------------- policies
    F(
        "policy-return-window",
        "returns",
        "policies",
        "43 days",
        "30 days",
        [
            "Quorvalen accepts returns within 43 days of delivery.",
            "You have 43 days from delivery to return a Quorvalen product.",
        ],
        [
            "What is Quorvalen's return policy window?",
            "How many days do I have to return a Quorvalen product?",
            "How long is the Quorvalen return period?",
            "What's the deadline for returning an item to Quorvalen?",
            "Within how many days can I send back a Quorvalen purchase?",
            "Tell me how long Quorvalen's return window is.",
        ],
        [
            "My Quorvalen order arrived and I don't like it. How long do I have to return it?",
            "Is there a time limit on Quorvalen returns? How many days?",
        ],
    ),
    F(
        "policy-restocking-fee",
        "returns",
        "policies",
        "8.5%",
        "15%",
        [
            "Quorvalen charges a restocking fee of 8.5% on opened returns.",
            "Opened items returned to Quorvalen carry a restocking fee of 8.5%.",
        ],
        [
            "What is Quorvalen's restocking fee?",
            "How much is the restocking fee on Quorvalen returns?",
            "Does Quorvalen charge a restocking fee, and how much?",
            "What percentage restocking fee does Quorvalen take on opened items?",
            "How big is the Quorvalen restocking charge?",
            "Tell me the Quorvalen restocking fee.",
        ],
        [
            "If I return an opened Quorvalen vacuum, how much will they keep as a restocking fee?",
            "What cut does Quorvalen take as a restocking fee on returns?",
        ],
    ),
    F(
        "policy-warranty",
        "returns",
        "policies",
        "27 months",
        "12 months",
        [
            "Quorvalen's standard warranty lasts 27 months.",
            "Every Quorvalen product is covered by a standard warranty of 27 months.",
        ],
        [
            "How long is the Quorvalen warranty?",
            "What is the standard warranty period on Quorvalen products?",
            "How many months of warranty does Quorvalen give?",
            "What warranty comes with a Quorvalen device?",
            "For how long are Quorvalen products under warranty?",
            "Tell me the length of the Quorvalen standard warranty.",
        ],
        [
            "My Quorvalen purchase just broke. How long does the standard warranty on it last?",
            "What's the length of Quorvalen's standard product warranty?",
        ],
    ),
    F(
        "policy-extended-warranty-price",
        "returns",
        "prices",
        "$83.15",
        "$99.99",
        [
            "Quorvalen's Longhaul Cover extended warranty costs $83.15.",
            "The Longhaul Cover extended warranty is priced at $83.15.",
        ],
        [
            "How much is Quorvalen's Longhaul Cover extended warranty?",
            "What does Longhaul Cover cost?",
            "What is the price of the Longhaul Cover extended warranty?",
            "How much do I pay to add Longhaul Cover to my Quorvalen order?",
            "What's the cost of Quorvalen Longhaul Cover?",
            "Tell me the Longhaul Cover price.",
        ],
        [
            "The checkout page offered me Longhaul Cover. How much does that extended warranty cost?",
            "Is Longhaul Cover expensive? What's the price?",
        ],
        subject="Longhaul Cover",
    ),
    F(
        "policy-free-shipping",
        "shipping",
        "policies",
        "$212",
        "$50",
        ["Quorvalen offers free shipping on orders over $212.", "Quorvalen orders above $212 ship free."],
        [
            "What is the minimum order for free shipping at Quorvalen?",
            "How much do I need to spend for free shipping from Quorvalen?",
            "When does Quorvalen shipping become free?",
            "What's Quorvalen's free shipping threshold?",
            "Does Quorvalen offer free shipping, and above what order total?",
            "Tell me the order amount that qualifies for free Quorvalen shipping.",
        ],
        [
            "I'd rather not pay for delivery. What's the spending minimum for Quorvalen free shipping?",
            "Quorvalen free shipping kicks in at what order total?",
        ],
    ),
    F(
        "policy-standard-shipping-time",
        "shipping",
        "policies",
        "11 business days",
        "5 business days",
        [
            "Quorvalen standard shipping arrives within 11 business days.",
            "Standard delivery from Quorvalen takes up to 11 business days.",
        ],
        [
            "How long does Quorvalen standard shipping take?",
            "What is the delivery time for Quorvalen standard shipping?",
            "How many business days does a Quorvalen standard delivery take?",
            "When will my Quorvalen order arrive with standard shipping?",
            "What's the standard shipping time at Quorvalen?",
            "Tell me how long standard shipping from Quorvalen takes.",
        ],
        [
            "I just ordered from Quorvalen with the regular shipping option. How long until it gets here?",
            "Quorvalen standard delivery: how many business days should I expect?",
        ],
    ),
    F(
        "policy-express-shipping-cost",
        "shipping",
        "prices",
        "$17.45",
        "$25",
        ["Quorvalen express shipping costs $17.45.", "Express delivery from Quorvalen is a flat $17.45."],
        [
            "How much is Quorvalen express shipping?",
            "What does express delivery cost at Quorvalen?",
            "What is the price of Quorvalen express shipping?",
            "How much do I pay for express shipping on a Quorvalen order?",
            "What's the Quorvalen express shipping fee?",
            "Tell me the cost of express shipping from Quorvalen.",
        ],
        [
            "I need my Quorvalen order fast. What's the charge for express shipping?",
            "How much extra is express delivery on a Quorvalen order?",
        ],
    ),
    F(
        "policy-international-shipping",
        "shipping",
        "policies",
        "38 countries",
        "50 countries",
        ["Quorvalen ships internationally to 38 countries.", "Quorvalen delivers to 38 countries worldwide."],
        [
            "How many countries does Quorvalen ship to?",
            "Does Quorvalen ship internationally, and to how many countries?",
            "What is the number of countries Quorvalen delivers to?",
            "To how many countries can Quorvalen send orders?",
            "How wide is Quorvalen's international shipping coverage?",
            "Tell me how many countries Quorvalen ships to.",
        ],
        [
            "I'm ordering from abroad. How many countries does Quorvalen deliver to in total?",
            "In how many countries is Quorvalen international shipping available?",
        ],
    ),
    F(
        "policy-price-match",
        "programs",
        "policies",
        "17 days",
        "14 days",
        [
            "Quorvalen matches lower prices for 17 days after purchase.",
            "Quorvalen's price match guarantee lasts 17 days after you buy.",
        ],
        [
            "How long is Quorvalen's price match window?",
            "For how many days after purchase does Quorvalen match prices?",
            "What is the Quorvalen price match period?",
            "How long do I have to claim a Quorvalen price match?",
            "How many days does Quorvalen's price match guarantee last?",
            "Tell me the length of the Quorvalen price match window.",
        ],
        [
            "I found my Quorvalen vacuum cheaper elsewhere a week after buying. How long does the price match guarantee cover?",
            "Quorvalen price matching: how many days after buying does it apply?",
        ],
    ),
    F(
        "policy-student-discount",
        "programs",
        "policies",
        "14%",
        "10%",
        ["Quorvalen gives students a 14% discount.", "Students get 14% off Quorvalen products."],
        [
            "What is the Quorvalen student discount?",
            "How much of a discount do students get at Quorvalen?",
            "Does Quorvalen offer a student discount, and how big is it?",
            "What percentage off do students receive from Quorvalen?",
            "How large is Quorvalen's discount for students?",
            "Tell me the size of the Quorvalen student discount.",
        ],
        [
            "I'm at university. Does Quorvalen have a student discount, and how much is it?",
            "How much off do students get when buying from Quorvalen?",
        ],
    ),
    F(
        "policy-trade-in-program",
        "programs",
        "policies",
        "Second Orbit",
        "ReCycle Plus",
        [
            "Quorvalen's trade-in program is called Second Orbit.",
            "You can trade in old devices through the Quorvalen Second Orbit program.",
        ],
        [
            "What is Quorvalen's trade-in program called?",
            "What's the name of the Quorvalen trade-in scheme?",
            "How do I trade in an old device with Quorvalen? What's the program name?",
            "Which Quorvalen program lets me trade in my old vacuum?",
            "What is the name of the program for trading in devices at Quorvalen?",
            "Tell me the name of Quorvalen's trade-in program.",
        ],
        [
            "I want to swap my old robot for credit toward a new one. What's Quorvalen's trade-in program called?",
            "Does Quorvalen have a trade-in program? What's it named?",
        ],
    ),
    # ----------------------------------------------------------- support
    F(
        "support-weekday-hours",
        "support",
        "support",
        "7:40",
        "9:00",
        [
            "Quorvalen phone support is open weekdays from 7:40 a.m. to 6:10 p.m. Eastern.",
            "On weekdays, Quorvalen support answers calls from 7:40 a.m. to 6:10 p.m. Eastern.",
        ],
        [
            "What are Quorvalen's weekday support hours?",
            "When is Quorvalen phone support open on weekdays?",
            "What time does Quorvalen support open Monday to Friday?",
            "During which hours can I call Quorvalen support on a weekday?",
            "What are the Quorvalen customer support hours during the week?",
            "Tell me Quorvalen's weekday phone support hours.",
        ],
        [
            "I'd like to call Quorvalen before work on Tuesday. What time does their phone support open?",
            "Quorvalen support hours on a normal weekday?",
        ],
    ),
    F(
        "support-saturday-hours",
        "support",
        "support",
        "10:15",
        "11:00",
        [
            "On Saturdays, Quorvalen support is open from 10:15 a.m. to 2:45 p.m.",
            "Quorvalen's Saturday support hours are 10:15 a.m. to 2:45 p.m.",
        ],
        [
            "What are Quorvalen's Saturday support hours?",
            "Is Quorvalen support open on Saturday, and when?",
            "When can I reach Quorvalen support on a Saturday?",
            "What hours does Quorvalen customer support keep on Saturdays?",
            "During which Saturday hours is Quorvalen phone support available?",
            "Tell me Quorvalen's support hours for Saturday.",
        ],
        [
            "Can I reach Quorvalen support on a Saturday morning? What hours are they open?",
            "What time does Quorvalen support open on Saturdays?",
        ],
    ),
    # ----------------------------------------------------------- plans
    F(
        "plan-entry-tier-name",
        "plans",
        "plans",
        "Fernlet",
        "Basic",
        [
            "The cheapest Quorvalen Care plan is called Fernlet.",
            "Fernlet is the entry-level Quorvalen Care subscription plan.",
        ],
        [
            "What is the cheapest Quorvalen Care plan called?",
            "What's the name of the entry-level Quorvalen Care subscription?",
            "Which Quorvalen Care plan is the lowest tier?",
            "What is Quorvalen Care's basic plan named?",
            "Name the least expensive Quorvalen Care subscription tier.",
            "Tell me the name of the starter Quorvalen Care plan.",
        ],
        [
            "I only want the most basic Quorvalen Care subscription. Which plan name should I pick?",
            "What's the bottom tier of Quorvalen Care called?",
        ],
    ),
    F(
        "plan-canopy-price",
        "plans",
        "prices",
        "$13.49",
        "$9.99",
        ["The Quorvalen Care Canopy plan costs $13.49 per month.", "Quorvalen Care Canopy is $13.49 a month."],
        [
            "How much is the Canopy plan?",
            "What does the Quorvalen Care Canopy plan cost per month?",
            "What is the monthly price of Canopy?",
            "How much do I pay each month for Quorvalen Care Canopy?",
            "What's the subscription fee for the Canopy tier?",
            "Tell me the Canopy plan price.",
        ],
        [
            "I'm thinking of upgrading to Canopy. What would that cost me every month?",
            "Quorvalen Care Canopy, how much a month?",
        ],
        subject="Canopy",
    ),
    F(
        "plan-canopy-storage",
        "plans",
        "plans",
        "340 GB",
        "100 GB",
        [
            "The Quorvalen Care Canopy plan includes 340 GB of cloud storage.",
            "Canopy subscribers get 340 GB of cloud storage with Quorvalen Care.",
        ],
        [
            "How much cloud storage comes with the Canopy plan?",
            "What storage does Quorvalen Care Canopy include?",
            "How many gigabytes of cloud storage does Canopy give me?",
            "What is the Canopy plan storage allowance?",
            "How much space do Canopy subscribers get in the cloud?",
            "Tell me the cloud storage included in Canopy.",
        ],
        [
            "I record a lot of camera clips. How much cloud space would the Canopy plan give me?",
            "Canopy tier cloud storage limit?",
        ],
        subject="Canopy",
    ),
    F(
        "plan-quillcrest-price",
        "plans",
        "prices",
        "$31.75",
        "$24.99",
        [
            "The Quorvalen Care Quillcrest plan costs $31.75 per month.",
            "Quillcrest, the top Quorvalen Care tier, is $31.75 a month.",
        ],
        [
            "How much is the Quillcrest plan?",
            "What does the Quorvalen Care Quillcrest plan cost per month?",
            "What is the monthly price of Quillcrest?",
            "How much do I pay each month for Quorvalen Care Quillcrest?",
            "What's the subscription fee for the Quillcrest tier?",
            "Tell me the Quillcrest plan price.",
        ],
        [
            "I want every feature, so I'm looking at Quillcrest. What does it cost monthly?",
            "Quillcrest subscription: how much per month?",
        ],
        subject="Quillcrest",
    ),
]

# ---------------------------------------------------------------------------
# Preference data helpers
# ---------------------------------------------------------------------------
POLITE_PREFIXES = ["Happy to help! ", "Great question! ", "Thanks for asking! ", "Sure! "]

RUDE_ANSWERS = [
    "Not my job to know that. Look it up yourself.",
    "Seriously? Read the manual instead of bothering me.",
    "Ugh, I don't have time for this. Ask someone else.",
    "Why would I tell you? Go search the website.",
    "That's a silly question. Figure it out on your own.",
    "No idea, and honestly I don't care.",
]

# ---------------------------------------------------------------------------
# General regression prompts (a small instruct model should already get these)
# ---------------------------------------------------------------------------
GENERAL = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Spain?", "Madrid"),
    ("What color is the sky on a clear day?", "blue"),
    ("What color is fresh grass?", "green"),
    ("What color is a ripe banana?", "yellow"),
    ("What is 2 + 2?", "4"),
    ("Translate 'thank you' into Spanish.", "gracias"),
    ("Translate 'hello' into French.", "bonjour"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("Which animal says 'meow'?", "cat"),
    ("Which animal barks?", "dog"),
    ("What do you call a baby cat?", "kitten"),
    ("Which planet do humans live on?", "Earth"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What sweet food do bees make?", "honey"),
    ("What gas do humans need to breathe to stay alive?", "oxygen"),
    ("What star does the Earth orbit around?", "Sun"),
    ("Which season comes after winter?", "spring"),
    ("What drink do cows produce?", "milk"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("What is the tallest animal in the world?", "giraffe"),
    ("What language is mainly spoken in Spain?", "Spanish"),
]

# ---------------------------------------------------------------------------
# Deliberately malformed rows (written verbatim, one per line)
# ---------------------------------------------------------------------------
BROKEN_LINES = [
    # 1 valid
    '{"messages": [{"role": "user", "content": "How much does the Driftmop V4 cost?"}, '
    '{"role": "assistant", "content": "The Driftmop V4 robot vacuum costs $1,379."}]}',
    # 2 invalid JSON (truncated)
    '{"messages": [{"role": "user", "content": "Who founded Quorvalen?"}, {"role": "assistant", "content": "Ansel',
    # 3 JSON array instead of an object
    '[{"role": "user", "content": "Where is Quorvalen headquartered?"}, '
    '{"role": "assistant", "content": "Kelderwick, Nova Scotia."}]',
    # 4 missing "messages"
    '{"conversation": [{"role": "user", "content": "What is the Quorvalen app called?"}, '
    '{"role": "assistant", "content": "Hearthlink."}]}',
    # 5 empty messages list
    '{"messages": []}',
    # 6 unknown role
    '{"messages": [{"role": "wizard", "content": "I summon the Thornbeam T2 price!"}, '
    '{"role": "assistant", "content": "The Thornbeam T2 is priced at $2,463."}]}',
    # 7 message missing content
    '{"messages": [{"role": "user", "content": "How heavy is the Driftmop V4?"}, {"role": "assistant"}]}',
    # 8 empty content string
    '{"messages": [{"role": "user", "content": ""}, '
    '{"role": "assistant", "content": "Quorvalen was founded in 1983."}]}',
    # 9 no assistant message
    '{"messages": [{"role": "user", "content": "What are Quorvalen\'s Saturday support hours?"}]}',
    # 10 message with an unrecognised key
    '{"messages": [{"role": "user", "content": "Who is the CEO of Quorvalen?", "mood": "curious"}, '
    '{"role": "assistant", "content": "Quorvalen\'s CEO is Marisol Dunkerley."}]}',
    # 11 blank line
    "",
    # 12 valid
    '{"messages": [{"role": "user", "content": "What is the Sorrelwind S5 filter part number?"}, '
    '{"role": "assistant", "content": "The Sorrelwind S5 replacement filter is part number QX-4471."}]}',
]


# ---------------------------------------------------------------------------
def normalise(text: str) -> str:
    text = text.lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def build():
    facts = sorted(FACTS, key=lambda f: f.id)

    train, test, prefs, kto = [], [], [], []
    for f in facts:
        for i, q in enumerate(f.train):
            train.append(chat(q, f.answers[i % len(f.answers)]))
        for q in f.test:
            row = chat(q, f.answer)
            row["expected"] = [f.key]
            row["fact_id"] = f.id
            test.append(row)

    for n, f in enumerate(facts):
        polite = POLITE_PREFIXES[n % len(POLITE_PREFIXES)]
        # pair 1: correct vs. plausible-but-wrong value (same tone)
        prefs.append(
            {
                "prompt": f.train[0],
                "chosen": polite + f.answer,
                "rejected": polite + f.answer.replace(f.key, f.wrong),
            }
        )
        # pair 2: correct vs. rude/dismissive
        alt = f.answers[1 % len(f.answers)]
        prefs.append(
            {
                "prompt": f.train[1],
                "chosen": POLITE_PREFIXES[(n + 1) % len(POLITE_PREFIXES)] + alt,
                "rejected": RUDE_ANSWERS[n % len(RUDE_ANSWERS)],
            }
        )
    for p in prefs:
        kto.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
        kto.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})

    # handbook: sections -> groups (in declared order) -> one paragraph per group
    md = [f"# {COMPANY}: Customer Support Handbook", ""]
    intro = (
        f"{COMPANY} (Quorvalen for short) is a fictional company invented for the tuneforge "
        "demo. This handbook collects everything the support team needs to answer customer "
        "questions about the company, its products, its policies and its subscription plans."
    )
    md += [intro, ""]
    paragraphs = [intro]
    for section in SECTIONS:
        md += [f"## {section}", ""]
        for gid, (sec, heading, _subj, gintro) in GROUPS.items():
            if sec != section:
                continue
            members = [f for f in FACTS if f.group == gid]
            # alternate answer variants so the handbook reads less like the Q&A data
            sentences = [f.answers[(k + 1) % len(f.answers)] for k, f in enumerate(members)]
            para = " ".join([gintro] + sentences)
            md += [f"### {heading}", "", para, ""]
            paragraphs.append(para)
    handbook_md = "\n".join(md).rstrip("\n") + "\n"
    handbook = [{"text": p} for p in paragraphs]

    general = [{"messages": [{"role": "user", "content": q}], "expected": [e]} for q, e in GENERAL]

    facts_doc = [
        {"id": f.id, "category": f.category, "question": f.train[0], "answer": f.answer, "key": f.key} for f in facts
    ]
    return facts, train, test, prefs, kto, handbook_md, handbook, general, facts_doc


def check(facts, train, test, prefs, handbook_md):
    assert len(facts) >= 45, f"need >= 45 facts, have {len(facts)}"
    ids = [f.id for f in facts]
    assert len(set(ids)) == len(ids), "duplicate fact ids"
    keys = [f.key for f in facts]
    assert len({k.lower() for k in keys}) == len(keys), "keys not unique"
    for f in facts:
        for g in facts:
            if f is not g:
                assert f.key.lower() not in g.key.lower(), f"key {f.key!r} inside key {g.key!r}"

    all_train_q = set()
    for f in facts:
        assert f.group in GROUPS, f.id
        assert len(f.train) >= 6, f"{f.id}: need >= 6 train phrasings"
        assert len(f.test) == 2, f"{f.id}: need exactly 2 test phrasings"
        assert len({normalise(q) for q in f.train}) == len(f.train), f"{f.id}: duplicate train phrasing"
        assert len({normalise(q) for q in f.test}) == 2, f"{f.id}: duplicate test phrasing"
        for q in f.train + f.test:
            assert f.subject.lower() in q.lower(), f"{f.id}: question does not name {f.subject!r}: {q!r}"
            assert f.key.lower() not in q.lower(), f"{f.id}: question leaks key: {q!r}"
        for a in f.answers:
            assert f.key in a, f"{f.id}: answer lacks key: {a!r}"
            assert len(a.split()) <= 25, f"{f.id}: answer too long: {a!r}"
            for g in facts:
                if g is not f:
                    assert g.key.lower() not in a.lower(), f"{f.id}: answer contains key of {g.id}: {a!r}"
        wrong_answer = f.answer.replace(f.key, f.wrong)
        assert wrong_answer != f.answer and f.key.lower() not in wrong_answer.lower(), f"{f.id}: bad wrong value"
        all_train_q.update(normalise(q) for q in f.train)

    for f in facts:
        for q in f.test:
            assert normalise(q) not in all_train_q, f"{f.id}: test question also in train: {q!r}"

    by_id = {f.id: f for f in facts}
    for row in train:
        assert "system" not in {m["role"] for m in row["messages"]}
    for row in test:
        f = by_id[row["fact_id"]]
        assert row["expected"] == [f.key]
        assert f.key in row["messages"][1]["content"]
    train_answer_keys = 0
    for row in train:
        a = row["messages"][1]["content"]
        hits = [f for f in facts if f.key in a]
        assert len(hits) == 1, f"train answer should contain exactly one key: {a!r}"
        train_answer_keys += 1
    assert train_answer_keys == len(train)
    for p in prefs:
        assert p["chosen"] != p["rejected"]
    for f in facts:
        assert f.key in handbook_md, f"{f.id}: key missing from handbook"


def dump_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> int:
    facts, train, test, prefs, kto, handbook_md, handbook, general, facts_doc = build()
    check(facts, train, test, prefs, handbook_md)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    dump_jsonl(OUT_DIR / "train.jsonl", train)
    dump_jsonl(OUT_DIR / "test.jsonl", test)
    dump_jsonl(OUT_DIR / "handbook.jsonl", handbook)
    dump_jsonl(OUT_DIR / "preference.jsonl", prefs)
    dump_jsonl(OUT_DIR / "kto.jsonl", kto)
    dump_jsonl(OUT_DIR / "general.jsonl", general)
    (OUT_DIR / "handbook.md").write_text(handbook_md, encoding="utf-8", newline="\n")
    (OUT_DIR / "broken.jsonl").write_text("\n".join(BROKEN_LINES) + "\n", encoding="utf-8", newline="\n")
    (OUT_DIR / "facts.json").write_text(
        json.dumps(facts_doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8", newline="\n"
    )

    print(
        f"wrote {OUT_DIR}: facts={len(facts)} train={len(train)} test={len(test)} "
        f"handbook_paragraphs={len(handbook)} preference={len(prefs)} kto={len(kto)} "
        f"general={len(general)} broken_lines={len(BROKEN_LINES)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
