"""Word lists for the person-name heuristic in pii.py (kept apart so pii.py stays readable).

FIRST_NAMES: common given names across several languages, minus words that are also
ordinary English words or months (May, June, Will, Bill, Grace, Rose, Hope, Mark…),
which would flag "May Day" or "Will Smith's…" ambiguously.
NOT_SURNAMES: capitalised words that follow a first name without being a surname.
"""

FIRST_NAMES = frozenset(
    """
Aaron Abdul Abigail Adam Adrian Ahmed Aisha Alan Albert Alejandro Alex Alexander Alexandra Alice Alicia Alina
Alison Amanda Amelia Amir Amy Ana Andrea Andreas Andrew Angela Anna Anne Anthony Antonio Arjun Arthur Ashley
Barbara Beatriz Benjamin Bernard Beth Bianca Brandon Brian Bruno Carl Carla Carlos Carmen Caroline Catherine
Charles Charlotte Chen Chloe Chris Christian Christina Christine Christopher Claire Claudia Daniel Daniela David
Deborah Dennis Diana Diego Dmitri Dominic Donald Dorothy Edward Elena Elif Elizabeth Ella Emily Emma Eric Erik
Ethan Eva Fatima Felix Fernando Fiona Francesca Francesco Frank Gabriel Gabriela George Georgia Gerald Giovanni
Giulia Greta Hannah Hans Harry Heather Helen Henry Hiroshi Hugo Ian Ingrid Irene Isabel Isabella Ivan Jack Jacob
James Jana Jane Janet Jason Javier Jean Jennifer Jessica Joanna Joe Johan John Jonathan Jorge Jose Joseph Joshua
Juan Julia Julian Juliet Julie Justin Karen Karl Katarzyna Kate Katherine Kathleen Kenji Kevin Kim Klaus Laura
Lauren Leila Lena Leo Liam Linda Lisa Lucas Lucia Luis Luca Lukas Maria Marie Marco Margaret Mariana Marta Martin
Mary Mateo Matthew Mei Melissa Mia Michael Michelle Miguel Mohamed Mohammed Muhammad Nadia Natalia Nathan Nicholas
Nicole Nina Noah Olga Oliver Olivia Omar Oscar Pablo Patricia Paul Paula Pedro Peter Pierre Priya Rachel Rafael
Rahul Raj Rebecca Richard Robert Roberto Ryan Samantha Samuel Sandra Sara Sarah Sean Sebastian Sergei Sofia Sophie
Stefan Stephanie Stephen Steven Susan Sven Tanya Thomas Timothy Tom Tomas Valentina Vanessa Victor Victoria
Vikram Wei William Xavier Yasmin Yuki Yusuf Zoe Zhang Ali Amara Kofi Ngozi Sipho Thandiwe Oluwaseun Kwame Aditi
Ananya Rohan Sanjay Deepa Hana Jun Minh Linh Nguyen Tariq Layla Hassan Youssef Ines Lars Astrid Magnus Freya Anja
Jurgen Matteo Chiara Aleksandra Piotr Tomasz Marek Zofia Bogdan Irina Anastasia Pavel Svetlana Yara Rania Sina
""".split()
)

NOT_SURNAMES = frozenset(
    """
Street St Road Rd Avenue Ave Lane Drive Boulevard Square Place Court Way Hall House Building Tower Centre
Center Team Support Service Services Desk Office Department Group Inc Ltd LLC GmbH Corp Company Co Bank Hospital
University College School Airport Station Hotel Museum Foundation Institute Street Monday Tuesday Wednesday
Thursday Friday Saturday Sunday January February March April May June July August September October November
December The And Or But If Then We You He She They It Is Are Was Were Has Have Had Will Would Can Could Should
Please Thanks Thank Hi Hello Dear Yes No Not All Any Our Your Their His Her Its This That These Those Here There
When Where Why How What Who Which Today Tomorrow Yesterday Pro Max Plus Mini Ultra Lite Edition Series Model Version
North South East West New Old Great Little Big Saint San Santa Los Las City County River Lake Mountain Island
Valley Bay Beach Hill Hills Airlines Air Express Foods Motors Labs Systems Software Cloud Online Store Shop Market
Cafe Restaurant Bar Club Award Prize Act Law Day Night Morning Evening Week Weekend Year Month
Customer Customers Client Clients Sir Madam Everyone Everybody All Folks Guys Friends Colleagues Valued Again
Us Me Him Them Admin Sales Billing Accounts Reception Management Staff
""".split()
)
