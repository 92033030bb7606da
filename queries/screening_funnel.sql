-- title: Persons screened, by outcome
-- dimensions: outcome
-- population: persons screened
-- counts: distinct persons with a preliminary screening in the window, by the outcome of their screenings (identified if any screening identified them)
-- percent: outcome
-- order: 10
SELECT outcome, count(*) AS count
FROM screening_persons
GROUP BY outcome
