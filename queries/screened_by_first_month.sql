-- title: Persons screened, by month of their first screening
-- dimensions: first_month
-- population: persons screened
-- counts: distinct persons screened in the window, in the month they were first screened
-- order: 30
SELECT first_month, count(*) AS count
FROM screening_persons
GROUP BY first_month
