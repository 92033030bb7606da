-- title: Persons identified as victims of trafficking, by sex
-- dimensions: sex
-- population: persons screened
-- where: outcome = identified
-- counts: distinct persons screened in the window and identified as victims of trafficking
-- order: 20
SELECT sex, count(*) AS count
FROM screening_persons
WHERE outcome = 'identified'
GROUP BY sex
