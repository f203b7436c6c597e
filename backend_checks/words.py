"""The word list the data generator builds message text from.

Ordered roughly by how often chat messages use them: the generator picks word ``k`` with a
Zipf-like bias towards the front, so search terms range from very common ("the") to rare.
"test", "query" and "message" sit mid-list so the story's ``search_messages('test query')``
finds a realistic handful of rows.
"""

from __future__ import annotations

__all__ = ["WORDS"]

_TEXT = """
the you i to a and it is that for of in on me we are be have this my just so can
what with not do at your ok yes no will was but get if all know like go good now see
time up out about how then think there one when here they too going got let well
sure thanks really want today tomorrow back need call later meeting lunch dinner
work home come night great maybe right new day still week morning tonight yeah soon
love make take some also send photo video sorry please already done weekend trip
plan check office coffee train late message test query happy hope tell little long
next first last free place friday monday saturday sunday party movie game team
project report deadline birthday family weather rain sunny beach holiday flight
hotel ticket price share link file picture update release version deploy server
database index search result performance latency network battery memory phone
android iphone app feature bug fix review merge branch build pipeline status budget
invoice payment order delivery package address kitchen recipe pizza sushi burger
salad music concert playlist guitar piano book library chapter story garden flower
tree river mountain forest city street bridge museum gallery doctor dentist
appointment gym run bike swim yoga football basketball tennis coupon discount market
grocery bread cheese wine beer tea juice breakfast parking traffic bus taxi airport
station platform umbrella jacket shoes camera charger laptop keyboard monitor
printer router password account calendar reminder schedule agenda summary notes
slides draft feedback interview offer contract salary vacation passport visa embassy
currency exchange quantum galaxy volcano glacier penguin giraffe kangaroo octopus
saxophone violin accordion harmonica telescope microscope algorithm compiler
"""

WORDS: tuple[str, ...] = tuple(_TEXT.split())
