-- title: Persons identified as victims of trafficking, by sector of work
-- dimensions: sector
-- population: persons screened
-- where: outcome = identified
-- counts: distinct persons screened in the window and identified as victims of trafficking
-- order: 24
SELECT sector, count(*) AS count
FROM screening_persons
WHERE outcome = 'identified'
GROUP BY sector
