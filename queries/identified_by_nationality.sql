-- title: Persons identified as victims of trafficking, by nationality
-- dimensions: nationality
-- population: persons screened
-- where: outcome = identified
-- counts: distinct persons screened in the window and identified as victims of trafficking
-- order: 22
SELECT nationality, count(*) AS count
FROM screening_persons
WHERE outcome = 'identified'
GROUP BY nationality
